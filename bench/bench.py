#!/usr/bin/env python3
"""Benchmark driver: one worker (ours or Prefect's Python one) against a real Prefect server and
the ACI emulator, each a separate process, measured from outside.

`bench/run.sh` starts the Prefect server and calls this once per worker, then `report.py`
writes RESULTS.md. Standard library plus httpx (from the pinned prefect3 venv).

Phases, each against a fresh emulator (so its request counters belong to one worker):
  (a) idle   — launch → first poll (the work queue's server-side `last_polled`), idle RSS/CPU.
  (b) burst  — N flow runs created at once; pickup latency (run `created` → container group
               PUT reaching the emulator), starts/s, CPU per run, peak RSS, ARM requests per
               run by operation, flow-run end → container group gone.
  (c) steady — M concurrent long-running runs under the emulator's real ARM throttling:
               ARM requests/s, 429s, RSS, CPU over a window once they all run, and ARM
               requests per run over their whole life.

The container is `bench/image/bin/prefect`: it sets the run Running, sleeps, sets Completed
and exits 0, which is what a real engine does, at a cost a 2-core machine can afford 1,000 times.
"""

import argparse
import asyncio
import concurrent.futures as cf
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from urllib.parse import urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")
RG = "bench-rg"
IMAGE = "bench/noop:1"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_ts(s):
    if s is None:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summary(values):
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# --------------------------------------------------------------------------- process sampling


def proc_tree(pid):
    """pid and its descendants (the Python worker may spawn helpers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(parts[1]), []).append(int(d))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_sample(pid):
    """(rss_bytes, cpu_seconds) of pid's tree; cpu includes reaped children."""
    rss = 0
    cpu = 0.0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            # fields after ")": state=0, utime=11, stime=12, cutime=13, cstime=14
            cpu += sum(int(x) for x in parts[11:15]) / CLK_TCK
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return rss, cpu


class Sampler(threading.Thread):
    """Samples RSS and CPU of a process tree every `interval` seconds."""

    def __init__(self, pid, interval=0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples = []  # (t, rss, cpu)
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            rss, cpu = proc_sample(self.pid)
            self.samples.append((time.time(), rss, cpu))
            self.stop_event.wait(self.interval)

    def window(self, t0, t1):
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return {"peak_rss": None, "last_rss": None, "cpu": None}
        return {"peak_rss": max(x[1] for x in s), "last_rss": s[-1][1], "mean_rss": statistics.fmean(x[1] for x in s), "cpu": s[-1][2] - s[0][2]}


# --------------------------------------------------------------------------- first poll


class FirstPollProxy(threading.Thread):
    """A byte-for-byte TCP relay in front of the Prefect server that notes when the worker sends
    its first `get_scheduled_flow_runs` request.

    The server's own `last_polled` is stamped by a deduplicated background task (docket) that
    can run seconds after the poll, so it cannot time a launch. The relay adds well under a
    millisecond per request, the same for both workers (and their containers, which inherit
    the worker's PREFECT_API_URL).
    """

    def __init__(self, api_url):
        super().__init__(daemon=True)
        u = urlsplit(api_url)
        self.upstream = (u.hostname, u.port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.url = f"{u.scheme}://127.0.0.1:{self.sock.getsockname()[1]}{u.path}"
        self.first_poll = None

    def run(self):
        asyncio.run(self._serve())

    async def _serve(self):
        server = await asyncio.start_server(self._handle, sock=self.sock, limit=1 << 20)
        async with server:
            await server.serve_forever()

    async def _pipe(self, src, dst, watch):
        try:
            while True:
                data = await src.read(1 << 16)
                if not data:
                    break
                if watch and self.first_poll is None and b"/get_scheduled_flow_runs" in data:
                    self.first_poll = time.time()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                dst.close()
            except Exception:
                pass

    async def _handle(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=1 << 20)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w, True), self._pipe(up_r, writer, False))


# --------------------------------------------------------------------------- emulator


class Emulator:
    def __init__(self, binary, workdir, image_bin, quotas):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        config = {
            "listen": "127.0.0.1:0",
            "resource_groups": [{"name": RG, "location": "eastus"}],
            "images": [
                {
                    "image": "bench/noop:*",
                    "path_prepend": [str(image_bin)],
                    "entrypoint_aliases": {"/opt/prefect/entrypoint.sh": []},
                }
            ],
            # Logs of 1,000 containers stay small.
            "log_limit_bytes": 16384,
            "faults": {
                # Real ARM throttling (the default); ACI's create/delete quotas (300/h) would
                # refuse 1,000 concurrent groups by definition, so they are raised (off), as a
                # subscription with a quota increase would have them.
                "aci_quotas": None if not quotas else {},
            },
        }
        (self.dir / "emulator.json").write_text(json.dumps(config, indent=1))
        env_file = self.dir / "emulator.env"
        env_file.unlink(missing_ok=True)
        self.log = open(self.dir / "emulator.log", "w")
        self.proc = subprocess.Popen(
            [binary, "emulator", "--config", str(self.dir / "emulator.json"), "--env-file", str(env_file)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 30
        while not env_file.exists() or not env_file.read_text().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"emulator did not start; see {self.dir / 'emulator.log'}")
            time.sleep(0.05)
        self.env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        self.url = self.env["AZURE_RESOURCE_MANAGER_ENDPOINT"].rstrip("/")
        self.http = httpx.Client(timeout=60)

    def stats(self):
        rows = self.http.get(f"{self.url}/_emulator/stats").json()["requests"]
        return {(r["operation"], r["status"]): r["count"] for r in rows if not r["operation"].startswith("admin.")}

    def groups(self):
        return self.http.get(f"{self.url}/_emulator/groups").json()

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except Exception:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except Exception:
                pass
        self.log.close()


def stats_delta(a, b):
    out = {}
    for k, v in b.items():
        d = v - a.get(k, 0)
        if d:
            out[k] = d
    return out


def by_operation(delta, n):
    ops = {}
    for (op, status), c in delta.items():
        e = ops.setdefault(op, {"total": 0, "statuses": {}})
        e["total"] += c
        e["statuses"][str(status)] = e["statuses"].get(str(status), 0) + c
    total = sum(e["total"] for e in ops.values())
    throttled = sum(c for (op, status), c in delta.items() if status == 429)
    return {
        "operations": {op: {**e, "per_run": e["total"] / n if n else None} for op, e in sorted(ops.items())},
        "total": total,
        "per_run": total / n if n else None,
        "throttled_429": throttled,
    }


# --------------------------------------------------------------------------- Prefect


class Prefect:
    def __init__(self, api):
        self.api = api.rstrip("/")
        self.http = httpx.Client(base_url=self.api, timeout=120, limits=httpx.Limits(max_connections=16))

    def ok(self, r):
        if r.status_code >= 400:
            raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def create_pool(self, name, template):
        return self.ok(self.http.post("/work_pools/", json={"name": name, "type": "azure-container-instance", "base_job_template": template}))

    def create_deployment(self, flow_id, name, pool, job_variables):
        return self.ok(
            self.http.post(
                "/deployments/",
                json={"name": name, "flow_id": flow_id, "work_pool_name": pool, "job_variables": job_variables, "entrypoint": "flow.py:noop", "enforce_parameter_schema": False},
            )
        )["id"]

    def create_flow(self, name):
        return self.ok(self.http.post("/flows/", json={"name": name}))["id"]

    def create_run(self, deployment_id):
        t0 = time.time()
        for attempt in range(20):
            r = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json={})
            # SQLite lock contention answers 503; the server's ingestion time includes retries.
            if r.status_code != 503:
                break
            time.sleep(0.2 * (attempt + 1))
        fr = self.ok(r)
        return fr["id"], parse_ts(fr["created"]), t0, time.time()

    def runs(self, ids):
        out = {}
        ids = list(ids)
        for i in range(0, len(ids), 200):
            chunk = ids[i : i + 200]
            rows = self.ok(self.http.post("/flow_runs/filter", json={"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)}))
            for r in rows:
                out[r["id"]] = r
        return out

    def queue_last_polled(self, pool):
        r = self.http.get(f"/work_pools/{pool}/queues/default")
        if r.status_code != 200:
            return None
        return parse_ts(r.json().get("last_polled"))


# --------------------------------------------------------------------------- workers


def launch_worker(args, emu, pool, outdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AZURE_"))}
    env["PREFECT_API_URL"] = args.worker_api_url
    env["PREFECT_HOME"] = str(outdir / "prefect-home")
    # Both workers see the same Azure environment: the emulator's admin service principal.
    for k in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_SUBSCRIPTION_ID"):
        env[k] = emu.env[k]
    log_file = open(outdir / "worker.log", "w")
    if args.worker.startswith("rust"):
        env["AZURE_RESOURCE_MANAGER_ENDPOINT"] = emu.env["AZURE_RESOURCE_MANAGER_ENDPOINT"]
        env["AZURE_AUTHORITY_HOST"] = emu.env["AZURE_AUTHORITY_HOST"]
        if os.environ.get("BENCH_RUST_LOG"):
            env["PREFECT_ACI_LOG"] = os.environ["BENCH_RUST_LOG"]
        if args.worker == "rust-polling":
            env["PREFECT_ACI_EVENTS_PICKUP"] = "false"
        cmd = [args.binary, "worker", "start", "--pool", pool, "--name", f"bench-{args.worker}", "--with-healthcheck"]
        env["PREFECT_WORKER_WEBSERVER_PORT"] = str(args.metrics_port)
        env["PREFECT_WORKER_WEBSERVER_HOST"] = "127.0.0.1"
    else:
        # The harness-only shim (bench/python_shim/sitecustomize.py) points the Azure SDK
        # clients at the emulator; nothing else about the worker changes.
        env["PYTHONPATH"] = str(Path(__file__).parent / "python_shim")
        env["BENCH_ARM_URL"] = emu.url
        env["BENCH_AUTHORITY_HOST"] = emu.env["AZURE_AUTHORITY_HOST"]
        env["BENCH_LOCATION"] = "eastus"
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"
        cmd = [str(Path(args.python_venv) / "bin" / "prefect"), "worker", "start", "--pool", pool, "--type", "azure-container-instance", "--name", f"bench-{args.worker}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, t0, log_file


def stop_worker(proc):
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    except Exception:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except Exception:
            pass


def base_job_template(args):
    if args.worker.startswith("rust"):
        out = subprocess.run([args.binary, "pool", "template"], check=True, capture_output=True, text=True).stdout
    else:
        py = Path(args.python_venv) / "bin" / "python"
        code = "import json; from prefect_azure.workers.container_instance import AzureContainerWorker as W; print(json.dumps(W.get_default_base_job_template()))"
        out = subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# --------------------------------------------------------------------------- phases


def track_runs(prefect, emu, runs, deadline, group_every):
    """Follow runs until every one is final and its container group is gone (or deadline).

    runs: id -> dict(created=...). Fills group_created, group_last_seen, end_time, state.
    """
    ids = set(runs)
    last_group_poll = 0.0
    last_state_poll = 0.0
    gone_checked = set()
    while time.time() < deadline:
        now = time.time()
        if now - last_group_poll >= group_every:
            last_group_poll = now
            seen = set()
            for g in emu.groups():
                rid = g["name"][-36:]
                if rid not in ids:
                    rid = g.get("tags", {}).get("prefect.flow-run-id")
                if rid not in ids:
                    continue
                seen.add(rid)
                r = runs[rid]
                if "group_created" not in r:
                    r["group_created"] = parse_ts(g.get("created_at")) or now
                r["group_last_seen"] = now
            for rid in ids:
                r = runs[rid]
                if "group_created" in r and rid not in seen and "group_gone" not in r:
                    r["group_gone"] = now
        if now - last_state_poll >= 2.0:
            last_state_poll = now
            pending = [i for i in ids if not runs[i].get("final")]
            if pending:
                for rid, fr in prefect.runs(pending).items():
                    st = fr.get("state_type")
                    runs[rid]["state"] = st
                    if st in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                        runs[rid]["final"] = True
                        runs[rid]["end_time"] = parse_ts(fr.get("end_time")) or parse_ts((fr.get("state") or {}).get("timestamp"))
        if all(runs[i].get("final") and ("group_gone" in runs[i] or "group_created" not in runs[i]) for i in ids):
            return True
        time.sleep(0.05)
    return False


def create_runs(prefect, deployment_id, n):
    out = {}
    with cf.ThreadPoolExecutor(4) as ex:
        for rid, created, t0, t1 in ex.map(lambda _: prefect.create_run(deployment_id), range(n)):
            out[rid] = {"created": created, "request_start": t0, "request_end": t1}
    return out


def phase_burst(args, prefect, emu, sampler, deployment_id):
    n = args.burst_runs
    log(f"(b) burst: creating {n} flow runs of {args.burst_flow_seconds}s")
    stats0 = emu.stats()
    t0 = time.time()
    runs = create_runs(prefect, deployment_id, n)
    t_created = time.time()
    done = track_runs(prefect, emu, runs, t0 + args.burst_flow_seconds + args.phase_timeout, 0.25)
    t1 = time.time()
    # Let the last DELETEs' follow-ups land before counting.
    time.sleep(1)
    stats1 = emu.stats()
    w = sampler.window(t0, t1)
    pickups = [r["group_created"] - r["created"] for r in runs.values() if "group_created" in r]
    deletions = [r["group_gone"] - r["end_time"] for r in runs.values() if r.get("group_gone") and r.get("end_time")]
    ingestion = [r["request_end"] - r["request_start"] for r in runs.values()]
    first_created = min(r["created"] for r in runs.values())
    last_put = max((r["group_created"] for r in runs.values() if "group_created" in r), default=None)
    states = {}
    for r in runs.values():
        states[r.get("state")] = states.get(r.get("state"), 0) + 1
    return {
        "runs": n,
        "flow_seconds": args.burst_flow_seconds,
        "completed_in_time": done,
        "creation_seconds": t_created - t0,
        "server_create_request_seconds": summary(ingestion),
        "pickup_seconds": summary(pickups),
        "groups_created": len(pickups),
        "starts_per_second": (len(pickups) / (last_put - first_created)) if last_put and last_put > first_created else None,
        "end_to_group_deleted_seconds": summary(deletions),
        "deletion_resolution_seconds": 0.25,
        "final_states": states,
        "worker_cpu_seconds": w["cpu"],
        "worker_cpu_seconds_per_run": (w["cpu"] / n) if w["cpu"] is not None else None,
        "peak_rss_bytes": w["peak_rss"],
        "arm": by_operation(stats_delta(stats0, stats1), n),
        "wall_seconds": t1 - t0,
        "per_run": {rid: {k: v for k, v in r.items() if k in ("created", "group_created", "end_time", "group_gone", "state")} for rid, r in runs.items()},
    }


def phase_steady(args, prefect, emu, sampler, deployment_id, partial=lambda r: None):
    m = args.steady_runs
    log(f"(c) steady: creating {m} flow runs of {args.steady_flow_seconds}s")
    stats0 = emu.stats()
    t0 = time.time()
    runs = create_runs(prefect, deployment_id, m)
    # Ramp: wait until every run's group exists (or the ramp times out).
    ramp_deadline = t0 + args.phase_timeout
    while time.time() < ramp_deadline:
        names = {g["name"][-36:] for g in emu.groups()}
        up = sum(1 for rid in runs if rid in names)
        if up >= m:
            break
        time.sleep(1.0)
    t_up = time.time()
    up_at_window = up
    # Let the creation tail (operation polls, first reads; Python's 30 s deployment poll) pass:
    # the window measures runs that are just running.
    log(f"(c) {up}/{m} groups up after {t_up - t0:.0f}s; settling {args.steady_settle}s, then measuring {args.steady_window}s")
    time.sleep(args.steady_settle)
    t_ramped = time.time()
    s_w0 = emu.stats()
    time.sleep(args.steady_window)
    s_w1 = emu.stats()
    t_w1 = time.time()
    win = sampler.window(t_ramped, t_w1)
    window_delta = stats_delta(s_w0, s_w1)
    window_total = sum(window_delta.values())
    window_429 = sum(c for (op, st), c in window_delta.items() if st == 429)
    window_result = {
        "runs": m,
        "flow_seconds": args.steady_flow_seconds,
        "groups_up_at_window": up_at_window,
        "ramp_seconds": t_up - t0,
        "window_seconds": t_w1 - t_ramped,
        "window_arm_requests_per_second": window_total / (t_w1 - t_ramped),
        "window_429": window_429,
        "window_429_per_second": window_429 / (t_w1 - t_ramped),
        "window_rss_bytes": win["last_rss"],
        "window_peak_rss_bytes": win["peak_rss"],
        "window_cpu_seconds_per_minute": (win["cpu"] / (t_w1 - t_ramped) * 60) if win["cpu"] is not None else None,
        "window_arm": by_operation(window_delta, 1),
        "incomplete": "interrupted before the runs finished",
    }
    partial(window_result)
    log("(c) window done; waiting for the runs to finish")
    done = track_runs(prefect, emu, runs, t0 + args.steady_flow_seconds + 2 * args.phase_timeout, 1.0)
    t1 = time.time()
    time.sleep(1)
    stats1 = emu.stats()
    whole = sampler.window(t0, t1)
    states = {}
    for r in runs.values():
        states[r.get("state")] = states.get(r.get("state"), 0) + 1
    ramp_delta = stats_delta(stats0, s_w0)
    return {
        "runs": m,
        "flow_seconds": args.steady_flow_seconds,
        "groups_up_at_window": up_at_window,
        "ramp_seconds": t_up - t0,
        "settle_seconds": args.steady_settle,
        "window_arm": by_operation(window_delta, 1),
        "ramp_429": sum(c for (op, st), c in ramp_delta.items() if st == 429),
        "window_seconds": t_w1 - t_ramped,
        "window_arm_requests_per_second": window_total / (t_w1 - t_ramped),
        "window_429": window_429,
        "window_429_per_second": window_429 / (t_w1 - t_ramped),
        "window_rss_bytes": win["last_rss"],
        "window_peak_rss_bytes": win["peak_rss"],
        "window_cpu_seconds_per_minute": (win["cpu"] / (t_w1 - t_ramped) * 60) if win["cpu"] is not None else None,
        "completed_in_time": done,
        "final_states": states,
        "peak_rss_bytes": whole["peak_rss"],
        "worker_cpu_seconds": whole["cpu"],
        "worker_cpu_seconds_per_run": (whole["cpu"] / m) if whole["cpu"] is not None else None,
        "arm": by_operation(stats_delta(stats0, stats1), m),
        "wall_seconds": t1 - t0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", choices=["rust", "rust-polling", "python"], required=True)
    ap.add_argument("--api-url", required=True)
    ap.add_argument("--binary", required=True, help="the prefect-aci release binary")
    ap.add_argument("--python-venv", help="venv with prefect-azure (python worker)")
    ap.add_argument("--out", required=True, help="directory for logs and result.json")
    ap.add_argument("--idle-seconds", type=float, default=20)
    ap.add_argument("--burst-runs", type=int, default=200)
    ap.add_argument("--burst-flow-seconds", type=float, default=60)
    ap.add_argument("--steady-runs", type=int, default=1000)
    ap.add_argument("--steady-flow-seconds", type=float, default=600)
    ap.add_argument("--steady-window", type=float, default=120)
    ap.add_argument("--steady-settle", type=float, default=60)
    ap.add_argument("--phase-timeout", type=float, default=600)
    ap.add_argument("--metrics-port", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated phases to skip (burst,steady)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    image_bin = Path(__file__).resolve().parent / "image" / "bin"

    prefect = Prefect(args.api_url)
    proxy = FirstPollProxy(args.api_url)
    proxy.start()
    args.worker_api_url = proxy.url
    tag = f"{args.worker}-{int(time.time())}"
    pool = f"bench-{tag}"
    emu = Emulator(args.binary, outdir / "emulator", image_bin, quotas=False)
    proc = None
    sampler = None
    result = {"worker": args.worker, "pool": pool, "started": dt.datetime.now(dt.timezone.utc).isoformat()}
    try:
        prefect.create_pool(pool, base_job_template(args))
        flow_id = prefect.create_flow(f"bench-noop-{tag}")
        vars_common = {"subscription_id": emu.env["AZURE_SUBSCRIPTION_ID"], "resource_group_name": RG, "image": IMAGE}
        burst_dep = prefect.create_deployment(flow_id, "burst", pool, {**vars_common, "env": {"BENCH_FLOW_SECONDS": str(args.burst_flow_seconds)}})
        steady_dep = prefect.create_deployment(flow_id, "steady", pool, {**vars_common, "env": {"BENCH_FLOW_SECONDS": str(args.steady_flow_seconds)}})

        # (a) launch → first poll, idle footprint. Warm the server's code paths first (a fresh
        # server answers its first requests slowly), so neither worker pays for the other.
        for _ in range(3):
            prefect.http.post(f"/work_pools/{pool}/get_scheduled_flow_runs", json={})
            prefect.http.get("/admin/version")
            prefect.http.get(f"/work_pools/{pool}")
        log(f"(a) launching the {args.worker} worker")
        proc, t_launch, log_file = launch_worker(args, emu, pool, outdir)
        sampler = Sampler(proc.pid)
        sampler.start()
        first_poll = None
        deadline = t_launch + 120
        while time.time() < deadline:
            if proxy.first_poll:
                first_poll = proxy.first_poll
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}; see {outdir / 'worker.log'}")
            time.sleep(0.01)
        log(f"(a) first poll after {first_poll - t_launch if first_poll else None}s; idling {args.idle_seconds}s")
        t_idle0 = time.time()
        time.sleep(args.idle_seconds)
        idle = sampler.window(t_idle0, time.time())
        result["idle"] = {
            "launch_to_first_poll_seconds": (first_poll - t_launch) if first_poll else None,
            "idle_rss_bytes": idle["last_rss"],
            "idle_cpu_seconds_per_minute": idle["cpu"] / (time.time() - t_idle0) * 60 if idle["cpu"] is not None else None,
        }
        # Written after each phase too, so an interrupted run keeps what it measured.
        save = lambda: (outdir / "result.json").write_text(json.dumps(result, indent=1, default=str))  # noqa: E731
        save()
        if "burst" not in skip:
            result["burst"] = phase_burst(args, prefect, emu, sampler, burst_dep)
            idle2 = sampler.window(time.time() - 3, time.time())
            result["burst"]["rss_after_bytes"] = idle2["last_rss"]
            save()
        if "steady" not in skip:
            result["steady"] = phase_steady(args, prefect, emu, sampler, steady_dep, lambda r: (result.__setitem__("steady", r), save()))
        if args.worker.startswith("rust") and args.metrics_port:
            try:
                result["metrics_sample"] = httpx.get(f"http://127.0.0.1:{args.metrics_port}/metrics", timeout=5).text[:20000]
            except Exception as e:  # /metrics is informative; its absence is not fatal
                result["metrics_sample"] = f"unavailable: {e}"
        result["peak_rss_bytes"] = max((s[1] for s in sampler.samples), default=None)
    finally:
        if sampler:
            sampler.stop_event.set()
        if proc:
            stop_worker(proc)
        emu.stop()
    result["finished"] = dt.datetime.now(dt.timezone.utc).isoformat()
    (outdir / "result.json").write_text(json.dumps(result, indent=1, default=str))
    log(f"wrote {outdir / 'result.json'}")


if __name__ == "__main__":
    main()
