//! Service principal with a client secret (AAD v2 client-credentials grant).
//!
//! Used for the pool's explicit `aci_credentials` block and for the
//! `AZURE_CLIENT_ID` + `AZURE_TENANT_ID` + `AZURE_CLIENT_SECRET` environment.

use url::Url;

use super::{aad, CredentialError, Secret, TokenCredential, TokenFuture};

/// Authenticates a service principal with a client secret.
#[derive(Clone)]
pub struct ClientSecretCredential {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    client_secret: Secret,
}

impl std::fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish()
    }
}

impl ClientSecretCredential {
    /// A credential for `client_id` in `tenant_id` at `authority_host`.
    ///
    /// Fails if any value is empty or the tenant id is malformed.
    pub fn new(
        http: reqwest::Client,
        authority_host: &Url,
        tenant_id: &str,
        client_id: &str,
        client_secret: Secret,
    ) -> Result<Self, CredentialError> {
        if client_id.trim().is_empty() || client_secret.is_empty() {
            return Err(CredentialError::Config(
                "client secret credential needs a non-empty client_id and client_secret".to_owned(),
            ));
        }
        Ok(ClientSecretCredential {
            http,
            token_url: aad::token_url(authority_host, tenant_id.trim())?,
            client_id: client_id.trim().to_owned(),
            client_secret,
        })
    }
}

impl TokenCredential for ClientSecretCredential {
    fn get_token<'a>(&'a self, scope: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            aad::request_token(
                self.name(),
                &self.http,
                &self.token_url,
                &self.client_id,
                scope,
                &[("client_secret", &self.client_secret)],
            )
            .await
        })
    }

    fn name(&self) -> &'static str {
        "ClientSecretCredential"
    }
}
