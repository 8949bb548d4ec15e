"""Drives the emulator with Azure's own Python SDK (azure-mgmt-containerinstance, azure-identity).

Run by sdk_python.rs with: ARM_URL, SUBSCRIPTION_ID, UAMI_CLIENT_ID and
AZURE_POD_IDENTITY_AUTHORITY_HOST (so ManagedIdentityCredential asks the emulator's IMDS).
Prints "SDK OK" when every check passed; any failure raises and exits non-zero.
"""

import os
import time

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.identity import ManagedIdentityCredential
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    EnvironmentVariable,
    ResourceRequests,
    ResourceRequirements,
)


class PlainHttpBearer(SansIOHTTPPolicy):
    """Bearer auth without azure-core's https-only check (the emulator serves plain http)."""

    def __init__(self, credential):
        self._credential = credential
        self._token = None

    def on_request(self, request):
        if self._token is None or self._token.expires_on - 60 < time.time():
            self._token = self._credential.get_token("https://management.azure.com/.default")
        request.http_request.headers["Authorization"] = "Bearer " + self._token.token


credential = ManagedIdentityCredential(client_id=os.environ["UAMI_CLIENT_ID"])
token = credential.get_token("https://management.azure.com/.default")
assert token.expires_on > time.time() + 600, token.expires_on

client = ContainerInstanceManagementClient(
    credential,
    os.environ["SUBSCRIPTION_ID"],
    base_url=os.environ["ARM_URL"],
    authentication_policy=PlainHttpBearer(credential),
    polling_interval=0.05,
)


def group(script, restart="Never"):
    return ContainerGroup(
        location="eastus",
        os_type="Linux",
        restart_policy=restart,
        tags={"made-by": "sdk"},
        containers=[
            Container(
                name="job",
                image="shell:1",
                command=["/bin/sh", "-c", script],
                resources=ResourceRequirements(requests=ResourceRequests(cpu=1.0, memory_in_gb=1.5)),
                environment_variables=[
                    EnvironmentVariable(name="PLAIN", value="p"),
                    EnvironmentVariable(name="SECRET", secure_value="s3cr3t"),
                ],
            )
        ],
    )


# Create (LRO through Azure-AsyncOperation) and wait for the job to finish.
created = client.container_groups.begin_create_or_update("rg", "sdk-job", group('echo "from-sdk $SECRET"; exit 4')).result()
assert created.provisioning_state == "Succeeded", created.provisioning_state
assert created.tags == {"made-by": "sdk"}
deadline = time.time() + 10
while True:
    cg = client.container_groups.get("rg", "sdk-job")
    if cg.instance_view.state in ("Succeeded", "Failed"):
        break
    assert time.time() < deadline, cg.instance_view.state
    time.sleep(0.05)
assert cg.instance_view.state == "Failed", cg.instance_view.state
view = cg.containers[0].instance_view
assert view.current_state.state == "Terminated"
assert view.current_state.exit_code == 4
assert view.restart_count == 0
assert [e.name for e in view.events] == ["Pulling", "Pulled", "Started"], [e.name for e in view.events]
secret = [v for v in cg.containers[0].environment_variables if v.name == "SECRET"][0]
assert secret.secure_value is None

logs = client.containers.list_logs("rg", "sdk-job", "job", timestamps=True)
assert logs.content.rstrip("\n").endswith(" from-sdk s3cr3t"), logs.content

# Paging: three groups with a page size of two.
for name in ("sdk-a", "sdk-b"):
    client.container_groups.begin_create_or_update("rg", name, group("true")).result()
names = sorted(g.name for g in client.container_groups.list_by_resource_group("rg"))
assert names == ["sdk-a", "sdk-b", "sdk-job"], names
assert len(list(client.container_groups.list())) == 3

# Errors surface with the service's codes.
try:
    client.container_groups.get("rg", "missing")
    raise AssertionError("expected ResourceNotFoundError")
except ResourceNotFoundError as e:
    assert e.error.code == "ResourceNotFound", e.error.code
bad = group("true")
bad.os_type = None
try:
    client.container_groups.begin_create_or_update("rg", "sdk-bad", bad)
    raise AssertionError("expected InvalidOsType")
except HttpResponseError as e:
    assert e.status_code == 400 and e.error.code == "InvalidOsType", (e.status_code, e.error.code)

# Stop / start.
client.container_groups.begin_create_or_update("rg", "sdk-svc", group("sleep 1000", "Always")).result()
client.container_groups.stop("rg", "sdk-svc")
assert client.container_groups.get("rg", "sdk-svc").instance_view.state == "Stopped"
client.container_groups.begin_start("rg", "sdk-svc").result()

# Delete (LRO), then the group is gone.
for name in ("sdk-job", "sdk-a", "sdk-b", "sdk-svc"):
    client.container_groups.begin_delete("rg", name).result()
assert list(client.container_groups.list_by_resource_group("rg")) == []
print("SDK OK")
