//! Tokens: the AAD v2 token endpoint, the IMDS-compatible managed identity endpoint, and
//! bearer validation for ARM.
//!
//! Tokens are opaque random strings mapped to a principal, an audience and an expiry (real
//! AAD tokens are JWTs, but clients must treat them as opaque anyway). Principals are the
//! configured service principals (client secret or federated assertion) and every
//! user-assigned identity in the emulator (through IMDS).
//!
//! IMDS exists in two places, like the platform endpoint a real ACI container sees:
//! - `/metadata/identity/oauth2/token`: any identity that exists in the emulator;
//! - `/_imds/{key}/metadata/identity/oauth2/token`: only the identities attached to one
//!   container group; containers get this base in `AZURE_POD_IDENTITY_AUTHORITY_HOST`, the
//!   variable Azure SDKs use to redirect their IMDS calls.

use std::time::Duration;

use arm_models::{AadError, AadTokenResponse, ImdsTokenResponse};
use axum::http::StatusCode;
use axum::response::Response;

use crate::config::Principal;
use crate::error::ArmError;
use crate::http::{json, set_header, text, Req};
use crate::state::{lock, SharedRef, TokenInfo};

/// Audiences ARM accepts (compared without a trailing `/`).
const ARM_AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// IMDS api-versions accepted.
const IMDS_VERSIONS: &[&str] = &[
    "2017-09-01",
    "2018-02-01",
    "2019-06-01",
    "2019-08-01",
    "2019-11-01",
    "2021-02-01",
];

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Issues a token and returns (token, lifetime seconds, expires_on).
fn issue(
    shared: &SharedRef,
    principal_id: &str,
    client_id: &str,
    audience: &str,
) -> (String, u64, i64) {
    let lifetime = shared.config.token_lifetime_secs;
    let expires_on = now_secs().saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX / 2));
    let token = format!(
        "emu.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut tokens = lock(&shared.tokens);
    // Drop expired tokens now and then so the map does not grow without bound.
    if tokens.len() > 10_000 {
        let now = now_secs();
        tokens.retain(|_, t| t.expires_on > now);
    }
    tokens.insert(
        token.clone(),
        TokenInfo {
            principal_id: principal_id.to_string(),
            client_id: client_id.to_string(),
            audience: audience.trim_end_matches('/').to_string(),
            expires_on,
        },
    );
    (token, lifetime, expires_on)
}

/// The object id of a configured principal.
pub(crate) fn object_id(p: &Principal) -> String {
    p.object_id.clone().unwrap_or_else(|| {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, p.client_id.as_bytes()).to_string()
    })
}

/// Validates the bearer token of an ARM request; returns the caller's object id.
pub(crate) fn authenticate_arm(shared: &SharedRef, req: &Req) -> Result<String, ArmError> {
    let Some(header) = req.header("authorization") else {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
        .with_header(
            "WWW-Authenticate",
            format!(
                "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", error_description=\"The authentication failed because of missing 'Authorization' header.\"",
                shared.base_url, shared.config.tenant_id
            ),
        ));
    };
    let invalid = || {
        ArmError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )
        .with_header(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"The access token is invalid.\"",
        )
    };
    let token = match header.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        )),
    };
    let info = lock(&shared.tokens)
        .get(token)
        .cloned()
        .ok_or_else(invalid)?;
    let now = now_secs();
    if info.expires_on <= now {
        let fmt = |s: i64| {
            chrono::DateTime::from_timestamp(s, 0)
                .map(|d| d.format("%m/%d/%Y %H:%M:%S").to_string())
                .unwrap_or_default()
        };
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                fmt(info.expires_on),
                fmt(now)
            ),
        )
        .with_header(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"The access token has expired.\"",
        ));
    }
    let aud_ok = ARM_AUDIENCES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&info.audience))
        || info
            .audience
            .eq_ignore_ascii_case(shared.base_url.trim_end_matches('/'));
    if !aud_ok {
        return Err(ArmError::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net','https://management.azure.com/','https://management.azure.com'.",
                info.audience
            ),
        ));
    }
    Ok(info.principal_id)
}

fn aad_error(status: StatusCode, error: &str, code: u64, description: String) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let body = AadError {
        error: error.to_string(),
        error_description: format!(
            "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")
        ),
        error_codes: vec![code],
        timestamp: Some(chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string()),
        trace_id: Some(trace.clone()),
        correlation_id: Some(trace),
    };
    json(status, &body)
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) fn aad_token(shared: &SharedRef, req: &Req, tenant: &str) -> Response {
    if req.method != axum::http::Method::POST {
        return aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.".into(),
        );
    }
    let tenant_ok = tenant.eq_ignore_ascii_case(&shared.config.tenant_id)
        || tenant.eq_ignore_ascii_case("organizations");
    if !tenant_ok {
        return aad_error(StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let f = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let missing = |p: &str| {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{p}'."),
        )
    };
    let Some(grant_type) = f("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = f("client_id") else {
        return missing("client_id");
    };
    let Some(scope) = f("scope") else {
        return missing("scope");
    };
    let Some(audience) = scope
        .split_whitespace()
        .next()
        .and_then(|s| s.strip_suffix("/.default"))
    else {
        return aad_error(StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        );
    };
    let principal = std::iter::once(&shared.config.admin)
        .chain(shared.config.principals.iter())
        .find(|p| p.client_id.eq_ignore_ascii_case(client_id));
    let Some(principal) = principal else {
        return aad_error(StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                shared.config.tenant_id
            ),
        );
    };
    if let Some(secret) = f("client_secret") {
        if principal.client_secret.as_deref() != Some(secret) {
            return aad_error(StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.".into(),
            );
        }
    } else if let Some(assertion) = f("client_assertion") {
        if f("client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return aad_error(StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "Invalid client_assertion_type; expected 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'.".into(),
            );
        }
        let accepted = match &principal.federated_assertions {
            None => false,
            Some(list) => list.is_empty() || list.iter().any(|a| a == assertion),
        };
        if !accepted {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion.".into(),
            );
        }
    } else {
        return aad_error(StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".into(),
        );
    }
    let (token, lifetime, _) = issue(
        shared,
        &object_id(principal),
        &principal.client_id,
        audience,
    );
    json(
        StatusCode::OK,
        &AadTokenResponse {
            token_type: "Bearer".into(),
            expires_in: lifetime,
            ext_expires_in: lifetime,
            access_token: token,
        },
    )
}

fn imds_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

/// `GET /metadata/identity/oauth2/token` (global when `scope_key` is `None`, else scoped to
/// the identities of the container group with that IMDS key).
pub(crate) fn imds_token(shared: &SharedRef, req: &Req, scope_key: Option<&str>) -> Response {
    let warmup = Duration::from_secs(shared.faults().imds_unavailable_secs);
    let first = *shared
        .imds_first_request
        .get_or_init(std::time::Instant::now);
    if first.elapsed() < warmup {
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The managed identity endpoint is not available yet; retry shortly.",
        );
        set_header(&mut r, "Retry-After", "1");
        return r;
    }
    if req.method != axum::http::Method::GET && req.method != axum::http::Method::POST {
        return imds_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Only GET is supported",
        );
    }
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        // ACI's endpoint answers this in plain text (which broke some SDK probes).
        return text(
            StatusCode::BAD_REQUEST,
            "Required metadata header not specified",
        );
    }
    let Some(version) = req.q("api-version") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    };
    if !IMDS_VERSIONS.contains(&version) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid version",
        );
    }
    let Some(resource) = req.q("resource").filter(|r| !r.is_empty()) else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        );
    };
    // Candidate identities: all of them, or those attached to the calling group.
    let candidates: Vec<(String, String, String)> = {
        let state = lock(&shared.state);
        let attached: Option<Vec<String>> = match scope_key {
            None => None,
            Some(key) => {
                let Some(group) = state.groups.values().find(|g| g.imds_key == key) else {
                    return imds_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Identity not found",
                    );
                };
                Some(
                    group
                        .identity
                        .as_ref()
                        .and_then(|i| i.user_assigned_identities.as_ref())
                        .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
                        .unwrap_or_default(),
                )
            }
        };
        state
            .identities
            .iter()
            .filter(|(k, _)| attached.as_ref().is_none_or(|a| a.contains(k)))
            .map(|(_, i)| (i.id.clone(), i.client_id.clone(), i.principal_id.clone()))
            .collect()
    };
    let selected: Vec<&(String, String, String)> = if let Some(c) = req.q("client_id") {
        candidates
            .iter()
            .filter(|i| i.1.eq_ignore_ascii_case(c))
            .collect()
    } else if let Some(o) = req.q("object_id").or(req.q("principal_id")) {
        candidates
            .iter()
            .filter(|i| i.2.eq_ignore_ascii_case(o))
            .collect()
    } else if let Some(r) = req.q("msi_res_id").or(req.q("mi_res_id")) {
        candidates
            .iter()
            .filter(|i| i.0.eq_ignore_ascii_case(r))
            .collect()
    } else {
        if candidates.len() > 1 {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            );
        }
        candidates.iter().collect()
    };
    let Some((_, client_id, principal_id)) = selected.first() else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    };
    let (token, lifetime, expires_on) = issue(shared, principal_id, client_id, resource);
    let now = u64::try_from(now_secs()).unwrap_or(0);
    json(
        StatusCode::OK,
        &ImdsTokenResponse {
            access_token: token,
            refresh_token: String::new(),
            expires_in: lifetime,
            expires_on: u64::try_from(expires_on).unwrap_or(0),
            not_before: now,
            resource: resource.to_string(),
            token_type: "Bearer".into(),
            client_id: Some(client_id.clone()),
        },
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`: the discovery document MSAL reads
/// to find the token endpoint of a custom authority.
pub(crate) fn openid_configuration(shared: &SharedRef, tenant: &str) -> Response {
    let tenant_ok = tenant.eq_ignore_ascii_case(&shared.config.tenant_id)
        || ["organizations", "common"]
            .iter()
            .any(|t| tenant.eq_ignore_ascii_case(t));
    if !tenant_ok {
        return aad_error(StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    let base = format!("{}/{}", shared.base_url, shared.config.tenant_id);
    json(
        StatusCode::OK,
        &serde_json::json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "tenant_region_scope": "NA",
        }),
    )
}
