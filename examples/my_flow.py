"""The guide's flow: deploy it to an ACI work pool and say hello from a container.

Deploy it the way the guide does (build and push an image to your registry):

    REGISTRY_NAME=myregistry WORK_POOL_NAME=my-aci-pool python my_flow.py

`make demo` deploys it with `PREFECT_ACI_DEMO=1`, which skips the Docker build and push (the
local emulator runs the "image" from this directory) and passes the emulator's subscription
and resource group as job variables.
"""
import json
import os

from prefect import flow, get_run_logger

try:  # Prefect 3 renamed the guide's DeploymentImage.
    from prefect.docker import DockerImage as DeploymentImage
except ImportError:  # Prefect 2
    from prefect.deployments import DeploymentImage


@flow
def my_flow():
    logger = get_run_logger()
    logger.info("Hello from ACI!")


if __name__ == "__main__":
    registry = os.environ.get("REGISTRY_NAME", "<registry-name>")
    demo = os.environ.get("PREFECT_ACI_DEMO") == "1"
    my_flow.deploy(
        name="aci-deployment",
        image=DeploymentImage(
            name=f"{registry}.azurecr.io/example:latest",
            platform="linux/amd64",
        ),
        work_pool_name=os.environ.get("WORK_POOL_NAME", "<work-pool-name>"),
        build=not demo,
        push=not demo,
        job_variables=json.loads(os.environ.get("PREFECT_ACI_JOB_VARIABLES", "{}")),
    )
