"""Azure's Python SDK with a client secret over HTTPS: MSAL authority discovery and token
request, azure-core's https-only bearer policy, and a job's full lifecycle.

Run by tls.rs with ARM_URL (https), SUBSCRIPTION_ID, TENANT_ID, CLIENT_ID, CLIENT_SECRET
FEDERATED_CLIENT_ID, FEDERATED_TOKEN_FILE and REQUESTS_CA_BUNDLE (system roots + the
emulator's CA). Prints "SDK HTTPS OK".
"""

import os
import time

from azure.identity import ClientSecretCredential, WorkloadIdentityCredential
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import Container, ContainerGroup, ResourceRequests, ResourceRequirements

arm = os.environ["ARM_URL"]
credential = ClientSecretCredential(
    os.environ["TENANT_ID"],
    os.environ["CLIENT_ID"],
    os.environ["CLIENT_SECRET"],
    authority=arm,
    disable_instance_discovery=True,
)
client = ContainerInstanceManagementClient(
    credential,
    os.environ["SUBSCRIPTION_ID"],
    base_url=arm,
    credential_scopes=["https://management.azure.com/.default"],
    polling_interval=0.05,
)
group = ContainerGroup(
    location="eastus",
    os_type="Linux",
    restart_policy="Never",
    containers=[
        Container(
            name="job",
            image="shell:1",
            command=["/bin/sh", "-c", "echo over-tls"],
            resources=ResourceRequirements(requests=ResourceRequests(cpu=0.5, memory_in_gb=0.5)),
        )
    ],
)
client.container_groups.begin_create_or_update("rg", "tls-job", group).result()
deadline = time.time() + 10
while client.container_groups.get("rg", "tls-job").instance_view.state != "Succeeded":
    assert time.time() < deadline
    time.sleep(0.05)
assert client.containers.list_logs("rg", "tls-job", "job").content == "over-tls\n"
client.container_groups.begin_delete("rg", "tls-job").result()

# Workload identity: a federated assertion read from a file instead of a secret.
federated = WorkloadIdentityCredential(
    tenant_id=os.environ["TENANT_ID"],
    client_id=os.environ["FEDERATED_CLIENT_ID"],
    token_file_path=os.environ["FEDERATED_TOKEN_FILE"],
    authority=arm,
    disable_instance_discovery=True,
)
fed_client = ContainerInstanceManagementClient(
    federated,
    os.environ["SUBSCRIPTION_ID"],
    base_url=arm,
    credential_scopes=["https://management.azure.com/.default"],
)
assert list(fed_client.container_groups.list()) == []
print("SDK HTTPS OK")
