//! Temporary minimal templating (replaced by the full implementation on the templating branch).

use serde_json::{Map, Value};

/// Errors from resolving a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplatingError {
    /// Something could not be resolved.
    #[error("{0}")]
    Invalid(String),
}

/// Error type of a [`TemplateSource`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// Where block documents and variables come from (the Prefect API, or a fake in tests).
#[allow(async_fn_in_trait)]
pub trait TemplateSource {
    async fn block_document_by_slug_and_name(&self, slug: &str, name: &str) -> Result<Option<Value>, SourceError>;
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, SourceError>;
    async fn variable(&self, name: &str) -> Result<Option<Value>, SourceError>;
}

/// Python `str()` of a JSON value (minimal).
pub fn python_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Render `{{ name }}` placeholders (minimal).
pub fn apply_values(template: &Value, values: &Map<String, Value>, env: &dyn Fn(&str) -> Option<String>) -> Option<Value> {
    match template {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1 {
                let name = t[2..t.len() - 2].trim();
                if let Some(var) = name.strip_prefix('$') {
                    return Some(Value::String(env(var).unwrap_or_default()));
                }
                if name.starts_with("prefect.") {
                    return Some(template.clone());
                }
                return values.get(name).cloned();
            }
            Some(template.clone())
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if let Some(r) = apply_values(v, values, env) {
                    out.insert(k.clone(), r);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(|v| apply_values(v, values, env)).collect())),
        other => Some(other.clone()),
    }
}
