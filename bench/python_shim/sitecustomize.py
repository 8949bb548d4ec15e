"""Harness-only shim: points the official Python ACI worker (prefect-azure 0.4.13) at the local
ACI emulator. Loaded by Python at start-up because bench.py puts this directory on PYTHONPATH
of the Python worker only; it does nothing unless BENCH_ARM_URL is set.

What it changes, and why each change keeps the worker's request pattern honest:

1. **Endpoints.** The worker builds `ContainerInstanceManagementClient` and
   `ResourceManagementClient` without `base_url`; both get the emulator's URL instead of
   https://management.azure.com. Every other client option (retry policy, LRO polling) stays.
2. **Bearer tokens over plain HTTP.** azure-core's bearer policy refuses non-https URLs and
   azure-identity refuses a non-https authority, so the credential classes prefect-azure
   imports (`DefaultAzureCredential`, `ClientSecretCredential`) become `EmulatorCredential`:
   a client-credentials grant against the emulator's AAD endpoint, one token per credential
   object, cached in it like MSAL does. prefect-azure builds a new credential per client per
   run, so the worker still asks for a new token for each client of each run — as it does
   on Azure. (MSAL's per-instance authority discovery request is not reproduced: the real
   worker makes slightly *more* AAD requests than counted here.)
3. **ARM deployments.** The emulator does not serve `Microsoft.Resources/deployments` yet. The
   worker's `deployments.begin_create_or_update` becomes: evaluate the worker's template
   (its three parameters), PUT the container group it describes through the same client
   pipeline, then follow it like an ARM deployment is followed: one status read every
   BENCH_DEPLOYMENT_POLL_SECONDS (default 30, the Azure SDK's LRO interval when ARM sends no
   Retry-After on deployments) until the group is provisioned. Request count is the same
   shape (1 write + 1 read per poll interval); the real deployment adds one final GET.
"""

import hashlib
import json
import os
import re
import sys
import threading
import time

ARM_URL = os.environ.get("BENCH_ARM_URL")


def _install():
    import httpx
    import azure.identity
    from azure.core.credentials import AccessToken
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.policies import SansIOHTTPPolicy
    from azure.core.rest import HttpRequest
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.resource import ResourceManagementClient

    AUTHORITY = os.environ["BENCH_AUTHORITY_HOST"].rstrip("/")
    LOCATION = os.environ.get("BENCH_LOCATION", "eastus")
    DEPLOYMENT_POLL = float(os.environ.get("BENCH_DEPLOYMENT_POLL_SECONDS", "30"))

    class EmulatorCredential:
        """Client-credentials tokens from the emulator's AAD endpoint (see module doc)."""

        def __init__(self, *args, **kwargs):
            self._token = None
            self._lock = threading.Lock()

        def get_token(self, *scopes, **kwargs):
            with self._lock:
                if self._token is None or self._token.expires_on - 300 < time.time():
                    tenant = os.environ["AZURE_TENANT_ID"]
                    r = httpx.post(
                        f"{AUTHORITY}/{tenant}/oauth2/v2.0/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": os.environ["AZURE_CLIENT_ID"],
                            "client_secret": os.environ["AZURE_CLIENT_SECRET"],
                            "scope": scopes[0] if scopes else "https://management.azure.com/.default",
                        },
                        timeout=30,
                    )
                    r.raise_for_status()
                    body = r.json()
                    self._token = AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))
                return self._token

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

    class PlainHttpBearer(SansIOHTTPPolicy):
        """Bearer auth without azure-core's https-only check."""

        def __init__(self, credential):
            self._credential = credential

        def on_request(self, request):
            token = self._credential.get_token("https://management.azure.com/.default")
            request.http_request.headers["Authorization"] = "Bearer " + token.token

    azure.identity.DefaultAzureCredential = EmulatorCredential
    azure.identity.ClientSecretCredential = EmulatorCredential

    def _redirect(cls):
        original = cls.__init__

        def __init__(self, credential, subscription_id, *args, **kwargs):
            kwargs["base_url"] = ARM_URL
            kwargs["authentication_policy"] = PlainHttpBearer(credential)
            original(self, credential, subscription_id, *args, **kwargs)

        cls.__init__ = __init__

    _redirect(ContainerInstanceManagementClient)
    _redirect(ResourceManagementClient)

    PARAM = re.compile(r"^\[parameters\('([^']+)'\)\]$")

    def _unique_string(*parts):
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:13]

    def _evaluate(template, supplied, rg_id):
        """The worker's template: resolve `[parameters('x')]` and its two default expressions."""
        values = {}
        for name, decl in (template.get("parameters") or {}).items():
            if name in supplied:
                values[name] = supplied[name]["value"]
                continue
            default = decl.get("defaultValue")
            if default == "[uniqueString(resourceGroup().id)]":
                default = _unique_string(rg_id)
            elif default == "[resourceGroup().location]":
                default = LOCATION
            values[name] = default

        def walk(v):
            if isinstance(v, str):
                m = PARAM.match(v)
                return values[m.group(1)] if m else v
            if isinstance(v, list):
                return [walk(x) for x in v]
            if isinstance(v, dict):
                return {walk(k): walk(x) for k, x in v.items()}
            return v

        return [walk(r) for r in template["resources"]]

    class _Props:
        def __init__(self, state, error=None):
            self.provisioning_state = state
            self.error = error

    class _DeploymentResult:
        def __init__(self, state):
            self.properties = _Props(state)

    class DeploymentPoller:
        """Follows the deployment's container group like ARM's deployment LRO is followed."""

        def __init__(self, client, path, api_version):
            self._client, self._path, self._api = client, path, api_version
            self._state = None
            self._error = None
            self._done = threading.Event()
            threading.Thread(target=self._run, daemon=True).start()

        def _run(self):
            try:
                while True:
                    time.sleep(DEPLOYMENT_POLL)
                    r = self._client._client.send_request(HttpRequest("GET", f"{ARM_URL.rstrip('/')}{self._path}?api-version={self._api}"))
                    if r.status_code == 200:
                        state = r.json().get("properties", {}).get("provisioningState")
                        if state in ("Succeeded", "Failed", "Canceled"):
                            self._state = state
                            return
                    elif r.status_code == 404:
                        self._error = f"container group {self._path} not found"
                        return
            except Exception as e:  # surfaced through result(), like an LRO error
                self._error = str(e)
            finally:
                self._done.set()

        def done(self):
            return self._done.is_set()

        def wait(self, timeout=None):
            self._done.wait(timeout)

        def status(self):
            return self._state or "InProgress"

        def result(self, timeout=None):
            self._done.wait(timeout)
            if self._error:
                raise HttpResponseError(message=f"DeploymentFailed: {self._error}")
            if self._state != "Succeeded":
                raise HttpResponseError(message=f"DeploymentFailed: container group provisioning {self._state}")
            return _DeploymentResult(self._state)

    class Deployments:
        def __init__(self, client):
            self._client = client

        def begin_create_or_update(self, resource_group_name, deployment_name, parameters, **kwargs):
            props = parameters.properties
            sub = self._client._config.subscription_id
            rg_id = f"/subscriptions/{sub}/resourceGroups/{resource_group_name}"
            resources = _evaluate(props.template, props.parameters or {}, rg_id)
            group = next(r for r in resources if r["type"].lower() == "microsoft.containerinstance/containergroups")
            body = {k: group[k] for k in ("location", "properties", "identity", "tags", "zones") if k in group}
            path = f"{rg_id}/providers/Microsoft.ContainerInstance/containerGroups/{group['name']}"
            api = group.get("apiVersion", "2022-09-01")
            r = self._client._client.send_request(HttpRequest("PUT", f"{ARM_URL.rstrip('/')}{path}?api-version={api}", json=body))
            if r.status_code >= 400:
                raise HttpResponseError(message=f"DeploymentFailed: {r.status_code} {r.text()[:500]}", response=r)
            return DeploymentPoller(self._client, path, api)

    ResourceManagementClient.deployments = property(lambda self: Deployments(self))


class _PatchOnFirstUse:
    """Installs the patches when prefect_azure is first imported, so processes that never load
    the worker (the CLI parent) pay nothing for the shim, and the worker pays only for modules
    prefect-azure imports anyway."""

    def find_spec(self, name, path=None, target=None):
        if name == "prefect_azure":
            sys.meta_path.remove(self)
            _install()
        return None


if ARM_URL:
    sys.meta_path.insert(0, _PatchOnFirstUse())
