"""Run the demo deployment, wait for it, and print what Prefect stored: the flow's log line
and the final state. Exits non-zero unless the run Completed and said hello."""
import asyncio
import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.deployments import run_deployment


async def main() -> int:
    run = await run_deployment("my-flow/aci-deployment", timeout=300, poll_interval=1)
    async with get_client() as client:
        run = await client.read_flow_run(run.id)
        # The engine ships its logs in the background; give the last batch a moment to land.
        for _ in range(40):
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            if any(log.message == "Hello from ACI!" for log in logs):
                break
            await asyncio.sleep(0.25)
    print()
    print(f"Flow run {run.name} ({run.id})")
    hello = [log for log in logs if log.message == "Hello from ACI!"]
    for log in hello:
        print(f"  log   {log.timestamp:%H:%M:%S} {log.name}: {log.message}")
    print(f"  state {run.state.type.value.capitalize() if run.state else None}")
    ok = bool(hello) and run.state is not None and run.state.is_completed()
    return 0 if ok else 1


sys.exit(asyncio.run(main()))
