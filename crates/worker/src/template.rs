//! The base job template of pool type `azure-container-instance`.
//!
//! It is a strict superset of the one prefect-azure 0.4.13 generates: every variable keeps its
//! name, type, default and required-ness, so pools, deployments and the UI's edit page created
//! for the Python worker keep working. New variables are optional and default to the old
//! behaviour: `secure_env`, `max_run_seconds`, `cancel_grace_seconds`, `fallback_locations`.

use serde_json::Value;

/// The pool type name Prefect uses for ACI.
pub const POOL_TYPE: &str = "azure-container-instance";

const TEMPLATE_JSON: &str = include_str!("aci/base-job-template.json");

/// The default base job template, as JSON.
pub fn base_job_template() -> Value {
    serde_json::from_str(TEMPLATE_JSON).expect("the embedded base job template is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_every_python_variable() {
        let ours = base_job_template();
        let py: Value = serde_json::from_str(include_str!(
            "../../../tests/data/prefect-azure-base-job-template.json"
        ))
        .unwrap();
        let (op, pp) = (
            &ours["variables"]["properties"],
            &py["variables"]["properties"],
        );
        for (name, schema) in pp.as_object().unwrap() {
            assert_eq!(
                &op[name], schema,
                "variable {name} differs from prefect-azure's"
            );
            assert_eq!(
                ours["job_configuration"][name], py["job_configuration"][name],
                "job_configuration.{name} differs"
            );
        }
        assert_eq!(ours["variables"]["required"], py["variables"]["required"]);
        assert_eq!(
            ours["variables"]["definitions"],
            py["variables"]["definitions"]
        );
    }

    #[test]
    fn new_variables_are_optional_with_defaults() {
        let t = base_job_template();
        let required = t["variables"]["required"].as_array().unwrap();
        for name in [
            "secure_env",
            "max_run_seconds",
            "cancel_grace_seconds",
            "fallback_locations",
        ] {
            assert!(
                t["variables"]["properties"][name].get("default").is_some(),
                "{name}"
            );
            assert!(
                !required.iter().any(|r| r == name),
                "{name} must not be required"
            );
            assert_eq!(t["job_configuration"][name], format!("{{{{ {name} }}}}"));
        }
    }
}
