//! Which Azure cloud to talk to, and the environment variables that pick it.
//!
//! A cloud is three facts: where AAD lives (`authority_host`), where ARM lives
//! (`resource_manager`) and which scope an ARM token is requested for
//! (`token_scope`). [`AzureCloud`] holds them; [`AzureEnvironmentConfig`]
//! reads them, plus the identity settings, from environment variables with the
//! names every Azure SDK uses:
//!
//! | Variable | Effect |
//! |---|---|
//! | `AZURE_ENVIRONMENT` | `AzurePublicCloud` (default), `AzureUSGovernment`, `AzureChinaCloud` |
//! | `AZURE_AUTHORITY_HOST` | overrides the AAD authority host |
//! | `AZURE_RESOURCE_MANAGER_ENDPOINT` | overrides the ARM endpoint, e.g. a local emulator at `http://127.0.0.1:PORT`; the token scope stays the cloud's scope |
//! | `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_CLIENT_SECRET` | service principal (environment credential) |
//! | `AZURE_FEDERATED_TOKEN_FILE` | workload identity assertion file (with client and tenant id) |
//! | `AZURE_POD_IDENTITY_AUTHORITY_HOST` | IMDS base URL (default `http://169.254.169.254`) |
//!
//! The reader takes a lookup function instead of touching the process
//! environment, so tests can pass a map and never mutate global state.

use std::path::PathBuf;

use url::Url;

use crate::credential::{CredentialError, Secret};

/// The endpoints of one Azure cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureCloud {
    /// AAD authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: Url,
    /// ARM endpoint, e.g. `https://management.azure.com/`.
    pub resource_manager: Url,
    /// The scope ARM tokens are requested for, e.g. `https://management.azure.com/.default`.
    pub token_scope: String,
}

fn fixed_url(s: &str) -> Url {
    // The constants below are literals known to parse; a failure is a bug in this file.
    Url::parse(s).unwrap_or_else(|e| panic!("built-in URL {s:?} does not parse: {e}"))
}

impl AzureCloud {
    /// The public cloud (`AzurePublicCloud`).
    pub fn public() -> Self {
        AzureCloud {
            authority_host: fixed_url("https://login.microsoftonline.com/"),
            resource_manager: fixed_url("https://management.azure.com/"),
            token_scope: "https://management.azure.com/.default".to_owned(),
        }
    }

    /// Azure US Government (`AzureUSGovernment`).
    pub fn us_government() -> Self {
        AzureCloud {
            authority_host: fixed_url("https://login.microsoftonline.us/"),
            resource_manager: fixed_url("https://management.usgovcloudapi.net/"),
            token_scope: "https://management.usgovcloudapi.net/.default".to_owned(),
        }
    }

    /// Azure operated by 21Vianet (`AzureChinaCloud`).
    pub fn china() -> Self {
        AzureCloud {
            authority_host: fixed_url("https://login.chinacloudapi.cn/"),
            resource_manager: fixed_url("https://management.chinacloudapi.cn/"),
            token_scope: "https://management.chinacloudapi.cn/.default".to_owned(),
        }
    }

    /// Looks a cloud up by its `AZURE_ENVIRONMENT` name (case-insensitive;
    /// `AzureCloud`, `public`, `usgov`, `china` are accepted as aliases).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "azurepubliccloud" | "azurecloud" | "public" => Some(Self::public()),
            "azureusgovernment" | "azureusgovernmentcloud" | "usgov" | "usgovernment" => {
                Some(Self::us_government())
            }
            "azurechinacloud" | "china" => Some(Self::china()),
            _ => None,
        }
    }
}

impl Default for AzureCloud {
    fn default() -> Self {
        Self::public()
    }
}

/// The default IMDS base URL.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// Cloud and identity settings read from the environment.
#[derive(Clone, Debug)]
pub struct AzureEnvironmentConfig {
    /// The cloud, after `AZURE_ENVIRONMENT` and the endpoint overrides.
    pub cloud: AzureCloud,
    /// `AZURE_CLIENT_ID`: the service principal, the workload identity app, or
    /// the user-assigned managed identity to use.
    pub client_id: Option<String>,
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    pub federated_token_file: Option<PathBuf>,
    /// IMDS base URL (`AZURE_POD_IDENTITY_AUTHORITY_HOST`, default `http://169.254.169.254`).
    pub imds_endpoint: Url,
}

impl Default for AzureEnvironmentConfig {
    fn default() -> Self {
        AzureEnvironmentConfig {
            cloud: AzureCloud::public(),
            client_id: None,
            tenant_id: None,
            client_secret: None,
            federated_token_file: None,
            imds_endpoint: fixed_url(DEFAULT_IMDS_ENDPOINT),
        }
    }
}

fn parse_base_url(var: &str, value: &str) -> Result<Url, CredentialError> {
    let url = Url::parse(value.trim()).map_err(|e| {
        CredentialError::Config(format!(
            "{var}={value:?} is not a valid URL ({e}); expected something like https://host[:port]"
        ))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(CredentialError::Config(format!(
            "{var}={value:?} must use http or https"
        )));
    }
    Ok(url)
}

impl AzureEnvironmentConfig {
    /// Reads the configuration through `get` (usually `|k| std::env::var(k).ok()`).
    ///
    /// Empty values count as unset. Malformed URLs and unknown cloud names are
    /// errors that name the variable.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, CredentialError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut cloud = match var("AZURE_ENVIRONMENT") {
            None => AzureCloud::public(),
            Some(name) => AzureCloud::from_name(&name).ok_or_else(|| {
                CredentialError::Config(format!(
                    "AZURE_ENVIRONMENT={name:?} is not a known cloud; use AzurePublicCloud, AzureUSGovernment or AzureChinaCloud"
                ))
            })?,
        };
        if let Some(v) = var("AZURE_AUTHORITY_HOST") {
            cloud.authority_host = parse_base_url("AZURE_AUTHORITY_HOST", &v)?;
        }
        if let Some(v) = var("AZURE_RESOURCE_MANAGER_ENDPOINT") {
            cloud.resource_manager = parse_base_url("AZURE_RESOURCE_MANAGER_ENDPOINT", &v)?;
        }
        let imds_endpoint = match var("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
            Some(v) => parse_base_url("AZURE_POD_IDENTITY_AUTHORITY_HOST", &v)?,
            None => fixed_url(DEFAULT_IMDS_ENDPOINT),
        };
        Ok(AzureEnvironmentConfig {
            cloud,
            client_id: var("AZURE_CLIENT_ID").map(|s| s.trim().to_owned()),
            tenant_id: var("AZURE_TENANT_ID").map(|s| s.trim().to_owned()),
            client_secret: var("AZURE_CLIENT_SECRET").map(Secret::new),
            federated_token_file: var("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            imds_endpoint,
        })
    }

    /// Reads the configuration from the process environment.
    pub fn from_process_env() -> Result<Self, CredentialError> {
        Self::from_env(&|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<AzureEnvironmentConfig, CredentialError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AzureEnvironmentConfig::from_env(&move |k| map.get(k).cloned())
    }

    #[test]
    fn default_is_public_cloud() {
        let c = env(&[]).unwrap();
        assert_eq!(c.cloud, AzureCloud::public());
        assert_eq!(
            c.cloud.resource_manager.as_str(),
            "https://management.azure.com/"
        );
        assert_eq!(c.imds_endpoint.as_str(), "http://169.254.169.254/");
        assert!(c.client_id.is_none() && c.client_secret.is_none());
    }

    #[test]
    fn each_named_cloud() {
        let gov = env(&[("AZURE_ENVIRONMENT", "AzureUSGovernment")])
            .unwrap()
            .cloud;
        assert_eq!(
            gov.authority_host.as_str(),
            "https://login.microsoftonline.us/"
        );
        assert_eq!(
            gov.resource_manager.as_str(),
            "https://management.usgovcloudapi.net/"
        );
        assert_eq!(
            gov.token_scope,
            "https://management.usgovcloudapi.net/.default"
        );
        let cn = env(&[("AZURE_ENVIRONMENT", "azurechinacloud")])
            .unwrap()
            .cloud;
        assert_eq!(
            cn.authority_host.as_str(),
            "https://login.chinacloudapi.cn/"
        );
        assert_eq!(
            cn.token_scope,
            "https://management.chinacloudapi.cn/.default"
        );
        let public = env(&[("AZURE_ENVIRONMENT", "AzurePublicCloud")])
            .unwrap()
            .cloud;
        assert_eq!(public, AzureCloud::public());
    }

    #[test]
    fn unknown_cloud_is_a_clear_error() {
        let e = env(&[("AZURE_ENVIRONMENT", "Mars")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AZURE_ENVIRONMENT") && e.contains("Mars"), "{e}");
    }

    #[test]
    fn emulator_endpoint_keeps_public_scope() {
        let c = env(&[
            ("AZURE_RESOURCE_MANAGER_ENDPOINT", "http://127.0.0.1:8443"),
            ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:8443/aad/"),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9000"),
        ])
        .unwrap();
        assert_eq!(c.cloud.resource_manager.as_str(), "http://127.0.0.1:8443/");
        assert_eq!(
            c.cloud.authority_host.as_str(),
            "http://127.0.0.1:8443/aad/"
        );
        assert_eq!(c.cloud.token_scope, "https://management.azure.com/.default");
        assert_eq!(c.imds_endpoint.as_str(), "http://127.0.0.1:9000/");
    }

    #[test]
    fn bad_url_names_the_variable() {
        let e = env(&[("AZURE_RESOURCE_MANAGER_ENDPOINT", "not a url")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("AZURE_RESOURCE_MANAGER_ENDPOINT"), "{e}");
        let e = env(&[("AZURE_AUTHORITY_HOST", "ftp://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("http or https"), "{e}");
    }

    #[test]
    fn identity_variables_and_empty_values() {
        let c = env(&[
            ("AZURE_CLIENT_ID", "cid"),
            ("AZURE_TENANT_ID", "tid"),
            ("AZURE_CLIENT_SECRET", "s3cret"),
            ("AZURE_FEDERATED_TOKEN_FILE", ""),
        ])
        .unwrap();
        assert_eq!(c.client_id.as_deref(), Some("cid"));
        assert_eq!(c.tenant_id.as_deref(), Some("tid"));
        assert_eq!(c.client_secret.as_ref().map(|s| s.expose()), Some("s3cret"));
        assert!(c.federated_token_file.is_none());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
