//! Trying several credential sources in order: [`ChainedCredential`] and the
//! standard [`DefaultAzureCredential`] order.
//!
//! A source that is merely *unavailable* here (not configured, no IMDS, no
//! `az`) lets the chain move on. A source that is configured but fails (AAD
//! rejects the secret, IMDS says the identity is not assigned) stops the
//! chain: silently falling back to another identity would hide the mistake
//! and act with the wrong permissions. Once a source has produced a token,
//! the chain sticks to it, so later calls do not re-probe the others.
//!
//! When nothing works, the error lists every source and why it failed,
//! including the ones skipped because they were not configured.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    AzureCliCredential, ClientSecretCredential, CredentialError, ManagedIdentityCredential,
    ManagedIdentityOptions, Secret, TokenCredential, TokenFuture, WorkloadIdentityCredential,
};
use crate::cloud::AzureEnvironmentConfig;

/// A credential that only reports why it is unavailable; keeps unconfigured
/// sources in the chain's error listing.
struct Unconfigured {
    name: &'static str,
    reason: String,
}

impl TokenCredential for Unconfigured {
    fn get_token<'a>(&'a self, _scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            Err(CredentialError::Unavailable {
                credential: self.name,
                reason: self.reason.clone(),
            })
        })
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// Tries sources in order until one produces a token.
pub struct ChainedCredential {
    name: &'static str,
    sources: Vec<(String, Arc<dyn TokenCredential>)>,
    selected: Mutex<Option<usize>>,
}

impl ChainedCredential {
    /// A chain of `(label, source)` pairs; the label appears in the error listing.
    pub fn new(sources: Vec<(String, Arc<dyn TokenCredential>)>) -> Self {
        ChainedCredential {
            name: "ChainedCredential",
            sources,
            selected: Mutex::new(None),
        }
    }

    /// The labels of the sources, in order.
    pub fn labels(&self) -> Vec<&str> {
        self.sources.iter().map(|(l, _)| l.as_str()).collect()
    }

    /// The label of the source that last produced a token, if any.
    pub fn selected(&self) -> Option<&str> {
        let i = (*self.selected.lock().unwrap_or_else(|p| p.into_inner()))?;
        self.sources.get(i).map(|(l, _)| l.as_str())
    }
}

impl TokenCredential for ChainedCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let selected = *self.selected.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, source)) = selected.and_then(|i| self.sources.get(i)) {
                return source.get_token(scope).await;
            }
            let mut attempts = Vec::new();
            for (i, (label, source)) in self.sources.iter().enumerate() {
                match source.get_token(scope).await {
                    Ok(token) => {
                        tracing::info!(credential = %label, "using credential source");
                        *self.selected.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                        return Ok(token);
                    }
                    Err(e) if e.is_unavailable() => {
                        tracing::debug!(credential = %label, error = %e, "credential source unavailable, trying the next");
                        attempts.push((label.clone(), e.to_string()));
                    }
                    Err(e) => {
                        attempts.push((label.clone(), e.to_string()));
                        return Err(CredentialError::ChainExhausted { attempts });
                    }
                }
            }
            Err(CredentialError::ChainExhausted { attempts })
        })
    }

    fn name(&self) -> &'static str {
        self.name
    }
}

/// The pool's explicit service principal (`aci_credentials`): all three
/// fields or none.
#[derive(Clone, Debug, Default)]
pub struct ExplicitClientSecret {
    /// Application (client) id.
    pub client_id: Option<String>,
    /// Tenant id or domain.
    pub tenant_id: Option<String>,
    /// Client secret.
    pub client_secret: Option<Secret>,
}

impl ExplicitClientSecret {
    /// `Ok(None)` when nothing is set, `Ok(Some((client, tenant, secret)))` when
    /// everything is, else an error naming the missing fields.
    pub fn validate(&self) -> Result<Option<(String, String, Secret)>, CredentialError> {
        let client = self
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let tenant = self
            .tenant_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let secret = self.client_secret.as_ref().filter(|s| !s.is_empty());
        match (client, tenant, secret) {
            (None, None, None) => Ok(None),
            (Some(c), Some(t), Some(s)) => Ok(Some((c.to_owned(), t.to_owned(), s.clone()))),
            _ => {
                let missing: Vec<&str> = [
                    (client.is_none(), "client_id"),
                    (tenant.is_none(), "tenant_id"),
                    (secret.is_none(), "client_secret"),
                ]
                .iter()
                .filter(|(m, _)| *m)
                .map(|(_, n)| *n)
                .collect();
                Err(CredentialError::Config(format!(
                    "aci_credentials must set all of client_id, tenant_id and client_secret, or none of them \
                     (to use the environment, managed identity or the Azure CLI); missing: {}",
                    missing.join(", ")
                )))
            }
        }
    }
}

/// Knobs of [`DefaultAzureCredential::from_env`].
#[derive(Clone, Debug)]
pub struct DefaultCredentialOptions {
    /// How long managed identity retries while IMDS warms up. Outside Azure
    /// nothing answers at the IMDS address, so the chain reaches the Azure
    /// CLI only after this long (once; the chain then sticks to the CLI).
    /// Lower it, or set `exclude_managed_identity`, for local development.
    pub imds_warmup: Duration,
    /// Leave managed identity out of the chain.
    pub exclude_managed_identity: bool,
    /// Leave the Azure CLI out of the chain.
    pub exclude_cli: bool,
    /// The `az` program to run.
    pub cli_program: PathBuf,
}

impl Default for DefaultCredentialOptions {
    fn default() -> Self {
        DefaultCredentialOptions {
            imds_warmup: ManagedIdentityOptions::default().warmup,
            exclude_managed_identity: false,
            exclude_cli: false,
            cli_program: PathBuf::from("az"),
        }
    }
}

/// The standard source order of the Azure SDKs.
pub struct DefaultAzureCredential;

impl DefaultAzureCredential {
    /// Builds the chain: explicit client secret → environment (client secret,
    /// then workload identity) → managed identity → Azure CLI.
    ///
    /// Fails early on a partial explicit block or an unusable tenant id.
    pub fn from_env(
        env: &AzureEnvironmentConfig,
        explicit: &ExplicitClientSecret,
        http: reqwest::Client,
        options: &DefaultCredentialOptions,
    ) -> Result<ChainedCredential, CredentialError> {
        let authority = &env.cloud.authority_host;
        let mut sources: Vec<(String, Arc<dyn TokenCredential>)> = Vec::new();

        if let Some((client, tenant, secret)) = explicit.validate()? {
            let c = ClientSecretCredential::new(http.clone(), authority, &tenant, &client, secret)?;
            sources.push((
                "ClientSecretCredential (aci_credentials)".to_owned(),
                Arc::new(c),
            ));
        }

        let client_id = env.client_id.as_deref();
        let tenant_id = env.tenant_id.as_deref();
        let env_label = "EnvironmentCredential".to_owned();
        match (&env.client_secret, client_id, tenant_id) {
            (Some(secret), Some(c), Some(t)) => {
                let cred =
                    ClientSecretCredential::new(http.clone(), authority, t, c, secret.clone())?;
                sources.push((env_label, Arc::new(cred)));
            }
            (Some(_), _, _) => sources.push((
                env_label,
                unconfigured(
                    "EnvironmentCredential",
                    "AZURE_CLIENT_SECRET is set but AZURE_CLIENT_ID and/or AZURE_TENANT_ID are not",
                ),
            )),
            (None, _, _) => sources.push((
                env_label,
                unconfigured(
                    "EnvironmentCredential",
                    "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET are not all set",
                ),
            )),
        }

        let wi_label = "WorkloadIdentityCredential".to_owned();
        match (&env.federated_token_file, client_id, tenant_id) {
            (Some(file), Some(c), Some(t)) => {
                let cred = WorkloadIdentityCredential::new(http.clone(), authority, t, c, file.clone())?;
                sources.push((wi_label, Arc::new(cred)));
            }
            (Some(_), _, _) => sources.push((
                wi_label,
                unconfigured("WorkloadIdentityCredential", "AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID and/or AZURE_TENANT_ID are not"),
            )),
            (None, _, _) => sources.push((
                wi_label,
                unconfigured("WorkloadIdentityCredential", "AZURE_FEDERATED_TOKEN_FILE is not set"),
            )),
        }

        if !options.exclude_managed_identity {
            let mi = ManagedIdentityCredential::new(
                http.clone(),
                ManagedIdentityOptions {
                    endpoint: env.imds_endpoint.clone(),
                    client_id: env.client_id.clone(),
                    warmup: options.imds_warmup,
                    ..ManagedIdentityOptions::default()
                },
            )?;
            sources.push(("ManagedIdentityCredential".to_owned(), Arc::new(mi)));
        }
        if !options.exclude_cli {
            let cli = AzureCliCredential::new()
                .with_program(options.cli_program.clone())
                .with_tenant(env.tenant_id.clone());
            sources.push(("AzureCliCredential".to_owned(), Arc::new(cli)));
        }
        let mut chain = ChainedCredential::new(sources);
        chain.name = "DefaultAzureCredential";
        Ok(chain)
    }
}

fn unconfigured(name: &'static str, reason: &str) -> Arc<dyn TokenCredential> {
    Arc::new(Unconfigured {
        name,
        reason: reason.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_block_all_or_none() {
        assert!(ExplicitClientSecret::default()
            .validate()
            .unwrap()
            .is_none());
        let full = ExplicitClientSecret {
            client_id: Some("c".into()),
            tenant_id: Some("t".into()),
            client_secret: Some("s".into()),
        };
        assert!(full.validate().unwrap().is_some());
        let partial = ExplicitClientSecret {
            client_id: Some("c".into()),
            client_secret: Some("hunter2".into()),
            ..Default::default()
        };
        let e = partial.validate().unwrap_err().to_string();
        assert!(
            e.contains("missing: tenant_id") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
