//! The `prefect-aci` binary as users run it.

use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prefect-aci"))
}

fn api_url() -> String {
    std::env::var("PREFECT_ACI_TEST_API_URL").expect(
        "PREFECT_ACI_TEST_API_URL is not set: run `make test`, which starts the Prefect servers",
    )
}

fn venv3() -> std::path::PathBuf {
    std::env::var_os("PREFECT_ACI_VENV3")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/prefect-aci/venvs/prefect3")
        })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

#[test]
fn pool_template_is_accepted_by_prefect_s_own_cli() {
    let out = bin().args(["pool", "template"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let template: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(template["variables"]["properties"]["resource_group_name"].is_object());

    let dir = std::env::temp_dir().join(unique("tpl"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("template.json");
    std::fs::write(&file, &out.stdout).unwrap();
    let pool = unique("cli-pool");
    let out = Command::new(venv3().join("bin/prefect"))
        .args([
            "work-pool",
            "create",
            &pool,
            "--type",
            "azure-container-instance",
            "--base-job-template",
        ])
        .arg(&file)
        .env("PREFECT_API_URL", api_url())
        .env("PREFECT_HOME", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prefect work-pool create refused our template: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pool_create_then_overwrite() {
    let pool = unique("cli-pool");
    let run = |extra: &[&str]| {
        let mut c = bin();
        c.args(["pool", "create", &pool])
            .args(extra)
            .env("PREFECT_API_URL", api_url());
        c.env_remove("PREFECT_API_KEY")
            .env_remove("PREFECT_API_AUTH_STRING");
        c.output().unwrap()
    };
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    let over = run(&["--overwrite"]);
    assert!(
        over.status.success(),
        "{}",
        String::from_utf8_lossy(&over.stderr)
    );
}

#[test]
fn worker_without_api_url_says_how_to_fix_it() {
    let out = bin()
        .args(["worker", "start", "--pool", "p"])
        .env_remove("PREFECT_API_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PREFECT_API_URL is not set"), "{err}");
}
