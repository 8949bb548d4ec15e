//! Workload identity: a federated client assertion read from a file.
//!
//! On AKS (and anything else that projects a service-account token), the
//! platform writes a short-lived JWT to `AZURE_FEDERATED_TOKEN_FILE` and
//! rotates it in place. AAD exchanges it for an access token through the
//! client-credentials grant with `client_assertion`. The file is read again
//! for every token request, so a rotated assertion is always picked up; token
//! requests are rare (the cache serves the rest), so the read costs nothing.

use std::path::PathBuf;

use url::Url;

use super::{aad, CredentialError, Secret, TokenCredential, TokenFuture};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Exchanges a federated token file for AAD tokens.
#[derive(Clone, Debug)]
pub struct WorkloadIdentityCredential {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    token_file: PathBuf,
}

impl WorkloadIdentityCredential {
    /// A credential for `client_id` in `tenant_id`, reading the assertion from `token_file`.
    pub fn new(
        http: reqwest::Client,
        authority_host: &Url,
        tenant_id: &str,
        client_id: &str,
        token_file: PathBuf,
    ) -> Result<Self, CredentialError> {
        if client_id.trim().is_empty() {
            return Err(CredentialError::Config(
                "workload identity needs AZURE_CLIENT_ID alongside AZURE_FEDERATED_TOKEN_FILE"
                    .to_owned(),
            ));
        }
        Ok(WorkloadIdentityCredential {
            http,
            token_url: aad::token_url(authority_host, tenant_id.trim())?,
            client_id: client_id.trim().to_owned(),
            token_file,
        })
    }

    async fn read_assertion(&self) -> Result<Secret, CredentialError> {
        let raw = tokio::fs::read_to_string(&self.token_file).await.map_err(|e| {
            CredentialError::Unavailable {
                credential: self.name(),
                reason: format!(
                    "cannot read the federated token file {} ({e}); check AZURE_FEDERATED_TOKEN_FILE",
                    self.token_file.display()
                ),
            }
        })?;
        let assertion = raw.trim();
        if assertion.is_empty() {
            return Err(CredentialError::Unavailable {
                credential: self.name(),
                reason: format!(
                    "the federated token file {} is empty",
                    self.token_file.display()
                ),
            });
        }
        Ok(Secret::new(assertion))
    }
}

impl TokenCredential for WorkloadIdentityCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            let assertion = self.read_assertion().await?;
            let assertion_type = Secret::new(ASSERTION_TYPE);
            aad::request_token(
                self.name(),
                &self.http,
                &self.token_url,
                &self.client_id,
                scope,
                &[
                    ("client_assertion", &assertion),
                    ("client_assertion_type", &assertion_type),
                ],
            )
            .await
        })
    }

    fn name(&self) -> &'static str {
        "WorkloadIdentityCredential"
    }
}
