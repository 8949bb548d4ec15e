//! Fuzz the templating engine: any JSON template with any values must render or refuse,
//! never panic. The input is two JSON documents separated by a NUL byte: the template (or a
//! whole base job template) and the values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prefect_client::job_config::{base_config_defaults, merge_job_variables, validate_base_job_template};
use prefect_client::templating::{apply_values, find_placeholders, get_from_dict};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let template: Value = match parts.next().and_then(|t| serde_json::from_slice(t).ok()) {
        Some(v) => v,
        // Plain text is a template too (a string with placeholders).
        None => Value::String(String::from_utf8_lossy(data).into_owned()),
    };
    let values: Map<String, Value> = parts
        .next()
        .and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default();
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("env-{name}"));
    let _ = find_placeholders(&template);
    let _ = apply_values(&template, &values, &env);
    for key in values.keys() {
        let _ = get_from_dict(&values, key);
        let _ = get_from_dict(&values, &format!("{key}.a[0].b"));
    }
    let _ = validate_base_job_template(&template);
    if let Some(props) = template["variables"]["properties"].as_object() {
        let _ = base_config_defaults(props);
    }
    let vals = Value::Object(values.clone());
    let _ = merge_job_variables(Some(&template), Some(&vals));
});
