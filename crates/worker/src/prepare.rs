//! A flow run's job configuration, built exactly as Prefect's `BaseWorker` builds it.
//!
//! 1. Merge job variables: deployment, then flow run (`env` merged, the rest replaced).
//! 2. Render the pool's base job template with them (defaults, `{{ }}`, `$ENV`, blocks,
//!    variables) — [`prefect_client::job_config`].
//! 3. `prepare_for_flow_run`: environment (worker settings → `PREFECT__FLOW_RUN_ID` →
//!    attribution variables → the configured env; `null` removes), labels, name and the
//!    default command (`prefect flow-run execute` on 3.x, `python -m prefect.engine` on 2.x).

use prefect_client::job_config::{job_configuration_from_template_and_values, merge_job_variables};
use prefect_client::models::{Deployment, Flow, FlowRun, WorkPool};
use prefect_client::templating::{apply_values, SourceError, TemplateSource, TemplatingError};
use prefect_client::{Auth, PrefectClient, ServerVersion};
use serde_json::{json, Map, Value};

/// Reads blocks and variables through the Prefect API.
pub struct ApiSource<'a>(pub &'a PrefectClient);

fn source_error(e: prefect_client::ApiError) -> SourceError {
    SourceError::with_source("the Prefect API request failed", e)
}

impl TemplateSource for ApiSource<'_> {
    async fn block_document_by_slug_and_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, SourceError> {
        self.0
            .read_block_document_data_by_name(slug, name)
            .await
            .map_err(source_error)
    }
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, SourceError> {
        self.0
            .read_block_document_data(id)
            .await
            .map_err(source_error)
    }
    async fn variable(&self, name: &str) -> Result<Option<Value>, SourceError> {
        self.0.read_variable(name).await.map_err(source_error)
    }
}

/// The inputs of [`build_job_configuration`].
pub struct PrepareInput<'a> {
    pub client: &'a PrefectClient,
    pub server: &'a ServerVersion,
    pub pool: &'a WorkPool,
    pub flow_run: &'a FlowRun,
    pub flow: &'a Flow,
    pub deployment: Option<&'a Deployment>,
    pub worker_name: &'a str,
    pub api_url: &'a str,
    pub auth: &'a Auth,
    pub passthrough_settings: &'a [(String, String)],
    /// The worker's Prefect Cloud id, when known.
    pub worker_id: Option<uuid::Uuid>,
}

/// Render and prepare the job configuration of one flow run.
pub async fn build_job_configuration(
    input: &PrepareInput<'_>,
) -> Result<Map<String, Value>, TemplatingError> {
    let values = merge_job_variables(
        input.deployment.and_then(|d| d.job_variables.as_ref()),
        input.flow_run.job_variables.as_ref(),
    );
    let env_lookup = |name: &str| std::env::var(name).ok();
    let mut config = job_configuration_from_template_and_values(
        &input.pool.base_job_template,
        &values,
        &ApiSource(input.client),
        &env_lookup,
    )
    .await?;
    // Prefect would fail merging a non-object `env`; dropping it silently would launch the
    // run without the variables its author set. (Only the type is named: it may be secret.)
    match config.get("env") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(other) => {
            let kind = match other {
                Value::String(_) => "a string",
                Value::Array(_) => "a list",
                _ => "a scalar",
            };
            return Err(TemplatingError::InvalidJobVariables(format!(
                "'env' must be an object of NAME: value, got {kind}"
            )));
        }
    }
    prepare_for_flow_run(&mut config, input);
    Ok(config)
}

/// Prefect's `prepare_for_flow_run`, applied in place.
pub fn prepare_for_flow_run(config: &mut Map<String, Value>, input: &PrepareInput<'_>) {
    let fr = input.flow_run;
    let mut env = Map::new();
    env.insert("PREFECT_API_URL".into(), json!(input.api_url));
    match input.auth {
        Auth::ApiKey(k) => {
            env.insert("PREFECT_API_KEY".into(), json!(k));
        }
        Auth::AuthString(s) => {
            env.insert("PREFECT_API_AUTH_STRING".into(), json!(s));
        }
        Auth::None => {}
    }
    for (k, v) in input.passthrough_settings {
        env.insert(k.clone(), json!(v));
    }
    env.insert("PREFECT__FLOW_RUN_ID".into(), json!(fr.id.to_string()));
    env.insert("PREFECT__WORKER_NAME".into(), json!(input.worker_name));
    if let Some(id) = input.worker_id {
        env.insert("PREFECT__WORKER_ID".into(), json!(id.to_string()));
    }
    env.insert("PREFECT__FLOW_ID".into(), json!(input.flow.id.to_string()));
    env.insert("PREFECT__FLOW_NAME".into(), json!(input.flow.name));
    if let Some(d) = input.deployment {
        env.insert("PREFECT__DEPLOYMENT_ID".into(), json!(d.id.to_string()));
        env.insert("PREFECT__DEPLOYMENT_NAME".into(), json!(d.name));
    }
    if let Some(Value::Object(configured)) = config.get("env") {
        for (k, v) in configured {
            env.insert(k.clone(), v.clone());
        }
    }
    // `None` values remove a variable, as in Prefect.
    env.retain(|_, v| !v.is_null());
    config.insert("env".into(), Value::Object(env));

    let mut labels = Map::new();
    labels.insert("prefect.io/flow-run-id".into(), json!(fr.id.to_string()));
    labels.insert("prefect.io/flow-run-name".into(), json!(fr.name));
    labels.insert("prefect.io/version".into(), json!(input.server.raw));
    labels.insert("prefect.io/work-pool-name".into(), json!(input.pool.name));
    labels.insert(
        "prefect.io/work-pool-id".into(),
        json!(input.pool.id.to_string()),
    );
    labels.insert("prefect.io/worker-name".into(), json!(input.worker_name));
    labels.insert(
        "prefect.io/flow-id".into(),
        json!(input.flow.id.to_string()),
    );
    labels.insert("prefect.io/flow-name".into(), json!(input.flow.name));
    if let Some(d) = input.deployment {
        labels.insert("prefect.io/deployment-id".into(), json!(d.id.to_string()));
        labels.insert("prefect.io/deployment-name".into(), json!(d.name));
        if let Some(u) = d.updated {
            labels.insert(
                "prefect.io/deployment-updated".into(),
                json!(u.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()),
            );
        }
    }
    if let Some(Value::Object(configured)) = config.get("labels") {
        for (k, v) in configured {
            labels.insert(k.clone(), v.clone());
        }
    }
    config.insert("labels".into(), Value::Object(labels));

    // The name may reference the run (`job-{{ ctx.flow_run.name }}`), rendered with ctx.
    let ctx = json!({"ctx": {
        "flow": {"id": input.flow.id.to_string(), "name": input.flow.name},
        "flow_run": {"id": fr.id.to_string(), "name": fr.name},
    }});
    let name = match config.get("name") {
        Some(Value::String(s)) if !s.is_empty() => {
            let rendered = apply_values(
                &Value::String(s.clone()),
                ctx.as_object().expect("object literal"),
                &|_| None,
            );
            match rendered {
                Some(Value::String(r)) if !r.is_empty() => r,
                _ => fr.name.clone(),
            }
        }
        _ => fr.name.clone(),
    };
    config.insert("name".into(), json!(name));

    let command_empty = match config.get("command") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    };
    if command_empty {
        let default = if input.server.is_v3() {
            "prefect flow-run execute"
        } else {
            "python -m prefect.engine"
        };
        config.insert("command".into(), json!(default));
    }
}
