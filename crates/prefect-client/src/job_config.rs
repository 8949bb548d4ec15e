//! Building a flow run's job configuration from the work pool's base job template, exactly as
//! Prefect 3.9.1 does (`BaseJobConfiguration.resolve_for_flow_run` and
//! `from_template_and_values` in `prefect/workers/base.py`).
//!
//! A base job template has two halves: `job_configuration`, the shape of what the worker needs
//! (with `{{ placeholders }}`), and `variables`, a JSON schema whose property defaults fill the
//! placeholders unless the deployment or flow run overrides them. The steps, later winning:
//!
//! 1. [`merge_job_variables`]: the deployment's job variables, then the flow run's. Only `env`
//!    is merged key by key; every other key is replaced whole.
//! 2. [`base_config_defaults`]: the schema defaults, skipping `null` ones so that the worker's
//!    own defaults apply to them.
//! 3. The pool's default `env` is merged into `job_configuration.env` if that is an object
//!    (otherwise it replaces the placeholder), before job variables can replace it.
//! 4. Dotted job variables (`"env.FOO": "x"`) are expanded into nested objects; plain keys win.
//! 5. The job variables override the defaults, and `env` is merged once more.
//! 6. [`crate::templating::apply_values`], then blocks, then Prefect variables.
//!
//! The result is the mapping Prefect passes to the worker's configuration model; validation of
//! its fields belongs to the worker.

use std::future::Future;

use serde_json::{Map, Value};

use crate::templating::{
    apply_values, find_placeholders_in_str, py_truthy, py_type_name,
    resolve_block_document_references, resolve_variables, TemplateSource, TemplatingError,
};

/// Merges a deployment's and a flow run's job variables (flow run wins).
///
/// If the deployment's `env` is an object, the flow run's `env` object is merged into it key by
/// key; otherwise the flow run's `env` replaces it like any other key. Keys keep the position
/// they first had. Prefect fails on a flow-run `env` that is not an object when the deployment's
/// is; here such a value is ignored and the deployment's `env` kept.
pub fn merge_job_variables(
    deployment_job_variables: Option<&Value>,
    flow_run_job_variables: Option<&Value>,
) -> Map<String, Value> {
    let empty = Map::new();
    let as_map = |v: Option<&Value>| match v {
        Some(Value::Object(map)) => map.clone(),
        _ => empty.clone(),
    };
    let mut job_variables = as_map(deployment_job_variables);
    let mut flow_run = as_map(flow_run_job_variables);
    if let Some(Value::Object(env)) = job_variables.get_mut("env") {
        if let Some(Value::Object(run_env)) = flow_run.shift_remove("env") {
            for (k, v) in run_env {
                env.insert(k, v);
            }
        }
    }
    for (k, v) in flow_run {
        job_variables.insert(k, v);
    }
    job_variables
}

/// The `default` of each property of a variables schema, skipping absent and `null` defaults
/// (Python's `BaseJobConfiguration._get_base_config_defaults`).
pub fn base_config_defaults(
    properties: &Map<String, Value>,
) -> Result<Map<String, Value>, TemplatingError> {
    let mut defaults = Map::new();
    for (name, attrs) in properties {
        match attrs {
            Value::Object(attrs) => {
                if let Some(default) = attrs.get("default").filter(|d| !d.is_null()) {
                    defaults.insert(name.clone(), default.clone());
                }
            }
            // Python evaluates `"default" in attrs` on whatever the property is: a substring
            // test for a string, a membership test for a list, and then fails calling `.get`.
            Value::String(s) if s.contains("default") => {
                return Err(invalid_template(format!(
                    "variable '{name}' is not a JSON schema object"
                )));
            }
            Value::Array(items) if items.iter().any(|i| i.as_str() == Some("default")) => {
                return Err(invalid_template(format!(
                    "variable '{name}' is not a JSON schema object"
                )));
            }
            Value::String(_) | Value::Array(_) => {}
            Value::Null | Value::Bool(_) | Value::Number(_) => {
                return Err(invalid_template(format!(
                    "variable '{name}' is not a JSON schema object"
                )));
            }
        }
    }
    Ok(defaults)
}

fn invalid_template(message: String) -> TemplatingError {
    TemplatingError::InvalidBaseJobTemplate(message)
}

/// Python's `left | right` for dicts: `left`'s keys in place, `right` winning and appending.
fn dict_or(
    left: &Map<String, Value>,
    right: &Value,
    what: &str,
) -> Result<Map<String, Value>, TemplatingError> {
    let Value::Object(right) = right else {
        return Err(TemplatingError::InvalidJobVariables(format!(
            "{what} must be an object to merge with the job configuration's env, found {}",
            py_type_name(right)
        )));
    };
    let mut out = left.clone();
    for (k, v) in right {
        out.insert(k.clone(), v.clone());
    }
    Ok(out)
}

/// Python's `set_in_dict(dct, "a.b[0]", value)`: creates missing objects along the path.
fn set_in_dict(
    dct: &mut Map<String, Value>,
    dotted: &str,
    value: Value,
) -> Result<(), TemplatingError> {
    let path = dotted.replace('[', ".").replace(']', "");
    let keys: Vec<&str> = path.split('.').collect();
    let (last, parents) = keys.split_last().unwrap_or((&"", &[]));
    let mut current = dct;
    for key in parents {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(next) = entry else {
            return Err(TemplatingError::InvalidJobVariables(format!(
                "job variable '{dotted}' goes through '{key}', which is already set to a non-object value"
            )));
        };
        current = next;
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

/// Python's `deep_merge(dct, merge)`: objects merged recursively, anything else replaced.
fn deep_merge(dct: &Map<String, Value>, merge: &Map<String, Value>) -> Map<String, Value> {
    let mut result = dct.clone();
    for (k, v) in merge {
        let merged = match (result.get(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => Value::Object(deep_merge(old, new)),
            _ => v.clone(),
        };
        result.insert(k.clone(), merged);
    }
    result
}

/// Expands dotted job-variable keys into nested objects; a plain key overwrites the expansion,
/// or is deep-merged over it when both are objects (Prefect 3.6.10+).
fn expand_dotted_keys(values: &Map<String, Value>) -> Result<Map<String, Value>, TemplatingError> {
    let mut transformed = Map::new();
    for (key, value) in values.iter().filter(|(k, _)| k.contains('.')) {
        set_in_dict(&mut transformed, key, value.clone())?;
    }
    for (key, value) in values.iter().filter(|(k, _)| !k.contains('.')) {
        let merged = match (transformed.get(key), value) {
            (Some(Value::Object(dotted)), Value::Object(plain)) => {
                Value::Object(deep_merge(dotted, plain))
            }
            _ => value.clone(),
        };
        transformed.insert(key.clone(), merged);
    }
    Ok(transformed)
}

/// Defaults, job variables and the pool's `env` merged, and standard placeholders applied:
/// everything before the steps that need the API.
fn render_without_api(
    base_job_template: &Value,
    values: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Value, TemplatingError> {
    let Some(Value::Object(base_config)) = base_job_template.get("job_configuration") else {
        return Err(invalid_template(
            "`job_configuration` must be an object".into(),
        ));
    };
    let mut base_config = base_config.clone();
    let properties = match base_job_template.get("variables") {
        Some(Value::Object(schema)) => match schema.get("properties") {
            None => Map::new(),
            Some(Value::Object(properties)) => properties.clone(),
            Some(_) => {
                return Err(invalid_template(
                    "`variables.properties` must be an object".into(),
                ))
            }
        },
        _ => return Err(invalid_template("`variables` must be an object".into())),
    };
    let mut variables = base_config_defaults(&properties)?;

    // The pool's default env goes in before job variables can replace `variables["env"]`.
    if let Some(default_env) = variables.get("env").filter(|e| py_truthy(e)) {
        let merged = match base_config.get("env") {
            Some(Value::Object(config_env)) => {
                Value::Object(dict_or(config_env, default_env, "the default of `env`")?)
            }
            _ => default_env.clone(),
        };
        base_config.insert("env".into(), merged);
    }

    for (k, v) in expand_dotted_keys(values)? {
        variables.insert(k, v);
    }

    if let Some(Value::Object(config_env)) = base_config.get("env") {
        if let Some(job_env) = variables.get("env").filter(|e| py_truthy(e)) {
            let merged = dict_or(config_env, job_env, "the job variable `env`")?;
            base_config.insert("env".into(), Value::Object(merged));
        }
    }

    // An object template never renders to NotSet.
    Ok(apply_values(&Value::Object(base_config), &variables, env)
        .unwrap_or(Value::Object(Map::new())))
}

/// Renders a job configuration (Python's `BaseJobConfiguration.from_template_and_values`, up to
/// the worker's model): `values` are the already merged job variables, see
/// [`merge_job_variables`].
///
/// Standard and `$ENV` placeholders are applied before the returned future first polls, so
/// `env` is not held across the API calls and the future is `Send`.
pub fn job_configuration_from_template_and_values<'s, S: TemplateSource>(
    base_job_template: &Value,
    values: &Map<String, Value>,
    source: &'s S,
    env: &dyn Fn(&str) -> Option<String>,
) -> impl Future<Output = Result<Map<String, Value>, TemplatingError>> + Send + 's {
    let rendered = render_without_api(base_job_template, values, env);
    async move {
        let rendered = resolve_block_document_references(rendered?, source).await?;
        match resolve_variables(rendered, source).await? {
            Value::Object(map) => Ok(map),
            // A `$ref` object at the top would be replaced by block data, which is an object.
            other => Err(invalid_template(format!(
                "the job configuration rendered to a {}, not an object",
                py_type_name(&other)
            ))),
        }
    }
}

/// Checks a base job template as the Prefect server does when a pool is created or updated
/// (`validate_base_job_template` in `prefect/server/schemas/actions.py`).
///
/// `{}` is valid. Otherwise both `job_configuration` and `variables` must be non-empty, and every
/// placeholder in the job configuration (standard, block, variable and `$ENV` alike) must name a
/// property of the variables schema. Like the server, this looks for placeholders in each value's
/// `json.dumps` text, where non-ASCII characters are escaped and so never form a placeholder.
pub fn validate_base_job_template(t: &Value) -> Result<(), TemplatingError> {
    let Value::Object(template) = t else {
        return Err(invalid_template(format!(
            "must be an object, found {}",
            py_type_name(t)
        )));
    };
    if template.is_empty() {
        return Ok(());
    }
    let job_config = template.get("job_configuration").filter(|v| py_truthy(v));
    let variables = template.get("variables").filter(|v| py_truthy(v));
    let (Some(job_config), Some(variables)) = (job_config, variables) else {
        return Err(invalid_template(
            "the `base_job_template` must contain both a `job_configuration` key and a `variables` key".into(),
        ));
    };
    let Value::Object(job_config) = job_config else {
        return Err(invalid_template(
            "`job_configuration` must be an object".into(),
        ));
    };
    let Value::Object(variables) = variables else {
        return Err(invalid_template("`variables` must be an object".into()));
    };
    let declared = match variables.get("properties") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(invalid_template(
                "`variables.properties` must be an object".into(),
            ))
        }
    };
    let mut missing: Vec<String> = Vec::new();
    for value in job_config.values() {
        let mut text = String::new();
        json_dumps_ascii(value, &mut text);
        for p in find_placeholders_in_str(&text) {
            if !declared.contains_key(&p.name) && !missing.contains(&p.name) {
                missing.push(p.name);
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        missing.sort();
        Err(TemplatingError::UndeclaredVariables { names: missing })
    }
}

/// Python's `json.dumps(value)` with its defaults (`ensure_ascii=True`), as far as placeholders
/// can tell: strings escaped, everything else in any JSON form (it cannot contain `{{`).
fn json_dumps_ascii(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => dump_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                json_dumps_ascii(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                dump_str(k, out);
                out.push_str(": ");
                json_dumps_ascii(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn dump_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::templating::tests::FakeSource;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test input must be an object"),
        }
    }

    fn keys(m: &Map<String, Value>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    async fn render(template: Value, values: Value) -> Result<Map<String, Value>, TemplatingError> {
        let env = |name: &str| (name == "WORKER_VAR").then(|| "from-worker".to_owned());
        job_configuration_from_template_and_values(
            &template,
            &map(values),
            &FakeSource::default(),
            &env,
        )
        .await
    }

    #[test]
    fn merge_merges_env_and_replaces_everything_else() {
        let merged = merge_job_variables(
            Some(&json!({"env": {"A": "d", "S": "d"}, "cpu": 1, "labels": {"x": "1"}})),
            Some(&json!({"env": {"S": "r", "B": "r"}, "labels": {"y": "2"}, "memory": 2})),
        );
        assert_eq!(
            Value::Object(merged.clone()),
            json!({"env": {"A": "d", "S": "r", "B": "r"}, "cpu": 1, "labels": {"y": "2"}, "memory": 2})
        );
        assert_eq!(keys(&merged), ["env", "cpu", "labels", "memory"]);
        assert_eq!(
            keys(merged["env"].as_object().unwrap_or(&Map::new())),
            ["A", "S", "B"]
        );
    }

    #[test]
    fn merge_replaces_env_when_the_deployment_has_no_env_object() {
        let merged = merge_job_variables(
            Some(&json!({"env": "{{ x }}"})),
            Some(&json!({"env": {"B": "2"}})),
        );
        assert_eq!(Value::Object(merged), json!({"env": {"B": "2"}}));
        assert_eq!(merge_job_variables(None, None), Map::new());
    }

    #[test]
    fn defaults_skip_absent_and_null() {
        let props = map(
            json!({"a": {"default": 1}, "b": {"default": null}, "c": {"type": "string"}, "d": {"default": false}}),
        );
        assert_eq!(
            base_config_defaults(&props).ok().map(Value::Object),
            Some(json!({"a": 1, "d": false}))
        );
    }

    #[tokio::test]
    async fn pool_env_then_deployment_env_then_placeholders() {
        let template = json!({
            "job_configuration": {"env": {"FIXED": "f", "SHARED": "cfg"}, "cpu": "{{ cpu }}", "image": "{{ image }}"},
            "variables": {"properties": {
                "env": {"default": {"POOL": "p", "SHARED": "pool"}},
                "cpu": {"default": 1.0},
                "image": {"default": null}}}
        });
        let rendered = render(template, json!({"env": {"RUN": "r", "SHARED": "run"}})).await;
        assert_eq!(
            rendered.ok().map(Value::Object),
            // `image` has a null default: the key is dropped so the worker's default applies.
            Some(
                json!({"env": {"FIXED": "f", "SHARED": "run", "POOL": "p", "RUN": "r"}, "cpu": 1.0})
            )
        );
    }

    #[tokio::test]
    async fn pool_env_default_replaces_an_env_placeholder() {
        let template = json!({
            "job_configuration": {"env": "{{ env }}", "x": "{{ x }}"},
            "variables": {"properties": {"env": {"default": {"POOL": "p"}}, "x": {}}}
        });
        assert_eq!(
            render(template, json!({"x": "{{ $WORKER_VAR }}"}))
                .await
                .ok()
                .map(Value::Object),
            // Substituted text is not templated again.
            Some(json!({"env": {"POOL": "p"}, "x": "{{ $WORKER_VAR }}"}))
        );
    }

    #[tokio::test]
    async fn dotted_job_variables_are_expanded_and_plain_keys_win() {
        let template = json!({
            "job_configuration": {"env": "{{ env }}", "a": "{{ a }}", "w": "{{ $WORKER_VAR }}"},
            "variables": {"properties": {"env": {}, "a": {}, "$WORKER_VAR": {}}}
        });
        let rendered = render(
            template.clone(),
            json!({"env.B": "b", "env": {"A": "a"}, "a.x": 1, "a": 2}),
        )
        .await;
        assert_eq!(
            rendered.ok().map(Value::Object),
            Some(json!({"env": {"B": "b", "A": "a"}, "a": 2, "w": "from-worker"}))
        );
        let conflict = render(template, json!({"env.A": "x", "env.A.B": "y"})).await;
        assert!(
            matches!(conflict, Err(TemplatingError::InvalidJobVariables(_))),
            "{conflict:?}"
        );
    }

    #[tokio::test]
    async fn env_that_cannot_be_merged_is_an_error() {
        let template = json!({
            "job_configuration": {"env": {"A": "a"}},
            "variables": {"properties": {"env": {}}}
        });
        let err = render(template, json!({"env": "not-an-object"})).await;
        assert!(
            matches!(err, Err(TemplatingError::InvalidJobVariables(_))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn blocks_and_variables_resolve_after_job_variables() {
        let source = FakeSource::default()
            .with_block("secret", "s", json!({"value": "s3cr3t"}))
            .with_variable("v", json!(3));
        let template = json!({
            "job_configuration": {"image": "{{ image }}", "n": "{{ n }}"},
            "variables": {"properties": {"image": {}, "n": {"default": "{{ prefect.variables.v }}"}}}
        });
        let values = map(json!({"image": "{{ prefect.blocks.secret.s }}"}));
        let rendered =
            job_configuration_from_template_and_values(&template, &values, &source, &|_| None)
                .await;
        assert_eq!(
            rendered.ok().map(Value::Object),
            Some(json!({"image": "s3cr3t", "n": 3}))
        );
    }

    #[test]
    fn rendering_futures_are_send() {
        // Workers render inside spawned tasks; this only has to compile.
        fn assert_send<T: Send>(_: T) {}
        let source = FakeSource::default();
        let template = json!({"job_configuration": {}, "variables": {}});
        let env = |_: &str| None;
        assert_send(job_configuration_from_template_and_values(
            &template,
            &Map::new(),
            &source,
            &env,
        ));
        assert_send(crate::templating::resolve_variables(json!(1), &source));
        assert_send(crate::templating::resolve_block_document_references(
            json!(1),
            &source,
        ));
    }

    #[test]
    fn validation_accepts_declared_placeholders() {
        let ok = json!({
            "job_configuration": {"a": "{{ a }}", "b": {"c": ["x {{ b }}"]}},
            "variables": {"properties": {"a": {}, "b": {}}}
        });
        assert!(validate_base_job_template(&ok).is_ok());
        assert!(validate_base_job_template(&json!({})).is_ok());
    }

    #[test]
    fn validation_rejects_undeclared_placeholders_of_every_kind() {
        let bad = json!({
            "job_configuration": {"a": "{{ a }} {{ $HOME }}", "k": {"{{ in_key }}": "{{ prefect.blocks.secret.s }}"}},
            "variables": {"properties": {"a": {}}}
        });
        let err = validate_base_job_template(&bad);
        assert!(
            matches!(&err, Err(TemplatingError::UndeclaredVariables { names })
                if names == &["$HOME", "in_key", "prefect.blocks.secret.s"]),
            "{err:?}"
        );
    }

    #[test]
    fn validation_sees_placeholders_as_json_text_like_the_server() {
        // `json.dumps` escapes non-ASCII and newlines, so these are not placeholders there.
        let t = json!({
            "job_configuration": {"a": "{{ ñ }}", "b": "{{\nb }}"},
            "variables": {"properties": {"x": {}}}
        });
        assert!(validate_base_job_template(&t).is_ok());
        let missing_half = json!({"job_configuration": {"a": 1}, "variables": {}});
        assert!(matches!(
            validate_base_job_template(&missing_half),
            Err(TemplatingError::InvalidBaseJobTemplate(_))
        ));
    }
}
