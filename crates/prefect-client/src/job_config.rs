//! Temporary minimal job configuration (replaced by the full implementation on the templating branch).

use serde_json::{Map, Value};

use crate::templating::{apply_values, TemplateSource, TemplatingError};

/// Deployment job variables, then flow-run job variables; `env` merged, the rest replaced.
pub fn merge_job_variables(deployment: Option<&Value>, flow_run: Option<&Value>) -> Map<String, Value> {
    let mut out = deployment.and_then(|v| v.as_object()).cloned().unwrap_or_default();
    if let Some(fr) = flow_run.and_then(|v| v.as_object()) {
        for (k, v) in fr {
            if k == "env" {
                if let (Some(Value::Object(a)), Value::Object(b)) = (out.get_mut("env"), v) {
                    for (ek, ev) in b {
                        a.insert(ek.clone(), ev.clone());
                    }
                    continue;
                }
            }
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Build the job configuration from a base job template and merged job variables.
pub async fn job_configuration_from_template_and_values<S: TemplateSource>(
    base_job_template: &Value,
    values: &Map<String, Value>,
    _source: &S,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Map<String, Value>, TemplatingError> {
    let mut vars = Map::new();
    if let Some(props) = base_job_template.pointer("/variables/properties").and_then(|p| p.as_object()) {
        for (k, p) in props {
            if let Some(d) = p.get("default").filter(|d| !d.is_null()) {
                vars.insert(k.clone(), d.clone());
            }
        }
    }
    for (k, v) in values {
        vars.insert(k.clone(), v.clone());
    }
    let jc = base_job_template.get("job_configuration").cloned().unwrap_or(Value::Object(Map::new()));
    match apply_values(&jc, &vars, env) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(TemplatingError::Invalid("job_configuration is not an object".into())),
    }
}
