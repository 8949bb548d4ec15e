//! Differential test: our templating against Prefect 3.9.1's own Python functions.
//!
//! The test generates several hundred cases from a fixed seed (templates, job variables, values
//! to print, base job templates, block and variable references), computes each with the Rust
//! code, runs `python/prefect_reference.py` with the pinned Prefect venv on the same cases, and
//! requires the same answer for every case: equal JSON with equal key order, the same `NotSet`,
//! or an error on both sides.
//!
//! Blocks and variables live on a real Prefect server: `PREFECT_ACI_TEST_API_URL`, which
//! `make test` (scripts/test.sh) provides. The Python side creates them with Prefect's own
//! classes; the Rust side reads them through a small reqwest [`TemplateSource`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use prefect_client::job_config::{
    base_config_defaults, job_configuration_from_template_and_values, merge_job_variables,
    validate_base_job_template,
};
use prefect_client::templating::{
    apply_values, find_placeholders, python_str, resolve_block_document_references,
    resolve_variables, SourceError, TemplateSource,
};
use serde_json::{json, Map, Value};

const SEED: u64 = 0x7E57_5EED;

/// The environment both sides see: the Python subprocess gets these variables, the Rust side a
/// closure over the same map.
fn test_env() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("TPL_A", "alpha"),
        ("TPL_EMPTY", ""),
        ("TPL_UNI", "ünï 名"),
        // Holds a placeholder: substitution is single-pass, so it must stay as text.
        ("TPL_QUOTE", "it's \"q\" {{ a }}"),
    ])
}

// ---------------------------------------------------------------------------------------------
// The Rust side of block and variable reads

struct HttpSource {
    http: reqwest::Client,
    api: url::Url,
}

impl HttpSource {
    async fn get(&self, segments: &[&str], field: &str) -> Result<Option<Value>, SourceError> {
        let mut url = self.api.clone();
        url.path_segments_mut()
            .map_err(|()| SourceError::new("API URL cannot be a base"))?
            .pop_if_empty()
            .extend(segments);
        if segments[0] != "variables" {
            url.query_pairs_mut().append_pair("include_secrets", "true");
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| SourceError::with_source("request failed", e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(SourceError::new(format!("HTTP {}", response.status())));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| SourceError::with_source("bad JSON", e))?;
        Ok(Some(body.get(field).cloned().unwrap_or(Value::Null)))
    }
}

impl TemplateSource for HttpSource {
    async fn block_document_by_slug_and_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, SourceError> {
        self.get(
            &["block_types", "slug", slug, "block_documents", "name", name],
            "data",
        )
        .await
    }

    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, SourceError> {
        self.get(&["block_documents", id], "data").await
    }

    async fn variable(&self, name: &str) -> Result<Option<Value>, SourceError> {
        self.get(&["variables", "name", name], "value").await
    }
}

// ---------------------------------------------------------------------------------------------
// Cases and outcomes

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(Value),
    NotSet,
    Error(String),
}

struct Case {
    /// Sent to Python: `id`, `kind` and the inputs.
    json: Value,
    /// What the Rust code produced.
    rust: Outcome,
}

/// JSON equality that also requires the same key order (Prefect's output order reaches ARM).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(va, vb)| same(va, vb))
        }
        (Value::Number(x), Value::Number(y)) => {
            // `1` and `1.0` differ in Python's output, so compare the kind, then the value.
            x.is_f64() == y.is_f64()
                && match (x.as_f64(), y.as_f64()) {
                    (Some(fx), Some(fy)) if x.is_f64() => fx.to_bits() == fy.to_bits(),
                    _ => x == y,
                }
        }
        _ => a == b,
    }
}

fn outcomes_match(rust: &Outcome, python: &Outcome) -> bool {
    match (rust, python) {
        (Outcome::Ok(a), Outcome::Ok(b)) => same(a, b),
        (Outcome::NotSet, Outcome::NotSet) | (Outcome::Error(_), Outcome::Error(_)) => true,
        _ => false,
    }
}

struct Cases {
    list: Vec<Case>,
}

impl Cases {
    fn push(&mut self, kind: &str, mut inputs: Map<String, Value>, rust: Outcome) {
        let id = format!("{kind}-{}", self.list.len());
        inputs.insert("id".into(), Value::String(id));
        inputs.insert("kind".into(), Value::String(kind.into()));
        self.list.push(Case {
            json: Value::Object(inputs),
            rust,
        });
    }
}

fn inputs(pairs: &[(&str, &Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).clone()))
        .collect()
}

fn outcome<E: std::fmt::Display>(r: Result<Value, E>) -> Outcome {
    match r {
        Ok(v) => Outcome::Ok(v),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Characters that exercise `repr()` escapes and Python's Unicode classes.
const INTERESTING_CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    '9',
    '_',
    ' ',
    '\'',
    '"',
    '\\',
    '\t',
    '\n',
    '\r',
    '\u{0}',
    '\u{7}',
    '\u{1b}',
    '\u{1c}',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{a0}',
    '\u{ad}',
    'é',
    'ñ',
    'ß',
    'ÿ',
    '\u{301}',
    '\u{378}',
    'Ω',
    'ж',
    '\u{5d0}',
    '\u{661}',
    '\u{200b}',
    '\u{200d}',
    '\u{2028}',
    '\u{3000}',
    '名',
    '\u{e000}',
    '\u{feff}',
    '\u{fffd}',
    '😀',
    '\u{1d7ce}',
    '\u{e0001}',
    '\u{10ffff}',
    '{',
    '}',
    '$',
    '.',
    '[',
    ']',
    '-',
];

struct Gen {
    rng: fastrand::Rng,
}

impl Gen {
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())].clone()
    }

    fn any_char(&mut self) -> char {
        if self.rng.u8(..4) == 0 {
            // Anywhere in Unicode, mostly the BMP.
            let max = if self.rng.bool() { 0xFFFF } else { 0x10FFFF };
            loop {
                if let Some(c) = char::from_u32(self.rng.u32(..=max)) {
                    return c;
                }
            }
        }
        self.pick(INTERESTING_CHARS)
    }

    fn text(&mut self, max_len: usize) -> String {
        let len = self.rng.usize(..=max_len);
        (0..len).map(|_| self.any_char()).collect()
    }

    fn float(&mut self) -> f64 {
        loop {
            let f = match self.rng.u8(..4) {
                0 => f64::from_bits(self.rng.u64(..)),
                1 => self.pick(&[
                    1.0,
                    -1.0,
                    0.0,
                    -0.0,
                    2.0,
                    0.1,
                    0.5,
                    1e-05,
                    1e-5,
                    0.0001,
                    1e16,
                    1e15,
                    1e17,
                    123456789012345680.0,
                    1.5e300,
                    5e-324,
                    1.7976931348623157e308,
                    2.5e-7,
                    1e22,
                    9007199254740993.0,
                    0.30000000000000004,
                    100.0,
                    1234.5,
                ]),
                2 => (self.rng.f64() - 0.5) * 10f64.powi(self.rng.i32(-12..20)),
                _ => f64::from(self.rng.i32(-1000..1000)) / 8.0,
            };
            if f.is_finite() {
                return f;
            }
        }
    }

    fn int(&mut self) -> Value {
        match self.rng.u8(..4) {
            0 => json!(self.pick(&[
                0i64,
                -1,
                1,
                i64::MIN,
                i64::MAX,
                9007199254740993,
                -9007199254740993
            ])),
            1 => json!(u64::MAX - self.rng.u64(..1000)),
            2 => json!(self.rng.i64(..)),
            _ => json!(self.rng.i64(-100..100)),
        }
    }

    fn scalar(&mut self) -> Value {
        match self.rng.u8(..6) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.bool()),
            2 => self.int(),
            3 => json!(self.float()),
            _ => Value::String(self.text(8)),
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        if depth == 0 || self.rng.u8(..3) > 0 {
            return self.scalar();
        }
        if self.rng.bool() {
            let n = self.rng.usize(..4);
            Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
        } else {
            let n = self.rng.usize(..4);
            Value::Object(
                (0..n)
                    .map(|_| (self.text(4), self.value(depth - 1)))
                    .collect(),
            )
        }
    }

    /// Whitespace inside braces: Python's `\s` includes `\x1c`-`\x1f`, `\x85` and U+3000.
    fn space(&mut self) -> String {
        self.pick(&[
            "", "", " ", " ", "  ", "\t", "\n", "\u{1c}", "\u{85}", "\u{a0}", "\u{3000}",
            "\u{200b}",
        ])
        .to_string()
    }

    fn placeholder_name(&mut self, extra: &[&str]) -> String {
        let names = [
            "a",
            "b",
            "cpu",
            "memory",
            "flag",
            "none",
            "dict",
            "list",
            "s",
            "uni",
            "nested.k.j",
            "nested.k",
            "nested.missing",
            "arr[0].x",
            "arr[1]",
            "arr[-1]",
            "arr.0.x",
            "arr[5]",
            "arr[-9]",
            "arr[1_0]",
            "big[1_0]",
            "big[-1]",
            "s[0]",
            "s.-1",
            "s[99]",
            "s.x",
            "s[0][0]",
            "flag[0]",
            "none.x",
            "cpu.x",
            "a-b",
            "ñame",
            "名前",
            "x\u{301}",
            "\u{661}",
            "arr[\u{661}]",
            "missing",
            "also_missing",
            "a..b",
            "a[]",
            "[0]",
            "-1",
            "$TPL_A",
            "$TPL_EMPTY",
            "$TPL_UNI",
            "$TPL_QUOTE",
            "$TPL_MISSING",
            "$",
            "$$TPL_A",
            "prefect.blocks.secret.x",
            "prefect.variables.v",
            "dict.k",
            "quote",
            "\u{1d7ce}",
            "list[1]",
            "क\u{93e}",
            "a\u{345}",
            "\u{b2}",
            "\u{1e030}",
        ];
        let mut all: Vec<&str> = names.to_vec();
        all.extend_from_slice(extra);
        self.pick(&all).to_string()
    }

    fn placeholder(&mut self, extra: &[&str]) -> String {
        let name = self.placeholder_name(extra);
        let (l, r) = (self.space(), self.space());
        format!("{{{{{l}{name}{r}}}}}")
    }

    fn template_string(&mut self, extra: &[&str]) -> String {
        match self.rng.u8(..10) {
            0..=3 => self.placeholder(extra),
            4 => {
                let p = self.placeholder(extra);
                format!("{p}{p}")
            }
            _ => {
                let mut s = String::new();
                for _ in 0..self.rng.usize(1..5) {
                    match self.rng.u8(..5) {
                        0 | 1 => s.push_str(&self.placeholder(extra)),
                        2 => s.push_str(self.pick(&["{", "}", "{{", "}}", "{{{", "{ {", "{{ }}"])),
                        _ => s.push_str(&self.text(4)),
                    }
                }
                s
            }
        }
    }

    fn template(&mut self, depth: u32, extra: &[&str]) -> Value {
        match self.rng.u8(..8) {
            _ if depth == 0 => Value::String(self.template_string(extra)),
            0 => self.scalar(),
            1 | 2 => {
                let n = self.rng.usize(..4);
                Value::Array((0..n).map(|_| self.template(depth - 1, extra)).collect())
            }
            3 | 4 => {
                let n = self.rng.usize(..4);
                Value::Object(
                    (0..n)
                        .map(|i| {
                            (
                                format!("k{i}{}", self.text(2)),
                                self.template(depth - 1, extra),
                            )
                        })
                        .collect(),
                )
            }
            _ => Value::String(self.template_string(extra)),
        }
    }

    fn values(&mut self) -> Map<String, Value> {
        let mut m = Map::new();
        let fixed: Vec<(&str, Value)> = vec![
            ("a", json!("A")),
            ("cpu", json!(2)),
            ("memory", json!(1.0)),
            ("flag", json!(true)),
            ("none", Value::Null),
            ("dict", json!({"a": 1, "b": [1, 2], "k": "it's"})),
            ("list", json!([1, "x", 2.5, null, false])),
            ("s", json!("héllo")),
            ("uni", json!("名前 ü \u{200b}")),
            ("nested", json!({"k": {"j": "deep"}})),
            (
                "arr",
                json!([{"x": 10}, "one", 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            ),
            (
                "big",
                json!(["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10"]),
            ),
            ("a-b", json!("dash")),
            ("ñame", json!("unicode key")),
            ("名前", json!({"x": [1]})),
            ("\u{661}", json!("arabic one")),
            ("quote", json!("{{ a }} stays")),
            ("\u{1d7ce}", json!("math digit")),
            // Word characters for Rust but not for Python 3.11 (a spacing mark, an
            // Other_Alphabetic mark, a Unicode 15 letter), and one for both.
            ("क\u{93e}", json!("devanagari")),
            ("a\u{345}", json!("iota")),
            ("\u{1e030}", json!("unicode 15")),
            ("\u{b2}", json!("superscript two")),
        ];
        for (k, v) in fixed {
            match self.rng.u8(..6) {
                0 => {}
                1 => {
                    m.insert(k.into(), self.value(2));
                }
                _ => {
                    m.insert(k.into(), v);
                }
            }
        }
        if self.rng.u8(..4) == 0 {
            m.insert("b".into(), self.value(3));
        }
        m
    }
}

// ---------------------------------------------------------------------------------------------
// The ACI base job template and realistic job variables

fn aci_template() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/prefect-azure-base-job-template.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the ACI base job template is JSON")
}

fn aci_job_variable_sets(prefix: &str) -> Vec<(Value, Value)> {
    let var = prefix.replace('-', "_");
    vec![
        (json!({}), json!({})),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub", "image": "repo/img:1"}),
            json!(null),
        ),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub", "cpu": 2, "memory": 3.5,
                   "env": {"DEP": "d", "SHARED": "dep"}, "command": "python -m x --flag 'a b'",
                   "stream_output": true, "identities": ["/subscriptions/s/id1"],
                   "subnet_ids": ["/sub/a"], "dns_servers": ["10.0.0.1"],
                   "task_start_timeout_seconds": 0, "keep_container_group": true}),
            json!({"env": {"RUN": "r", "SHARED": "run"}, "cpu": 1.5}),
        ),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub",
                   "image_registry": {"registry_url": "x.azurecr.io", "identity": "/id"},
                   "env": {"A": "1"}, "env.B": "2", "labels": {"l": "v"}, "name": "n-{{ x }}"}),
            json!({"env.C": "3", "gpu_count": 1, "entrypoint": null, "memory": 1e-05}),
        ),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub", "env": "not-a-dict"}),
            json!({"env": {"X": "y"}}),
        ),
        (
            json!({"env.A": "dotted", "resource_group_name": "rg", "subscription_id": "sub"}),
            json!({"env": {"B": null}, "cpu": 4, "image": "img-{{ $TPL_A }}"}),
        ),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub",
                   "image": format!("{{{{ prefect.blocks.secret.{prefix}-secret }}}}"),
                   "command": format!("run {{{{ prefect.variables.{var}_str }}}} {{{{ prefect.blocks.tpl-string.{prefix}-string }}}}"),
                   "aci_credentials": {"$ref": {"block_document_id": "__MULTI_ID__"}},
                   "env": {"TOKEN": format!("{{{{ prefect.blocks.secret.{prefix}-secret }}}}"),
                           "VAR": format!("{{{{ prefect.variables.{var}_int }}}}"),
                           "MISSING_VAR": "{{ prefect.variables.does_not_exist_xyz }}"}}),
            json!({"env": {"RUN": format!("v={{{{ prefect.variables.{var}_dict }}}}")},
                   "memory": format!("{{{{ prefect.variables.{var}_float }}}}")}),
        ),
        (
            json!({"resource_group_name": "rg", "subscription_id": "sub",
                   "image": format!("{{{{ prefect.blocks.secret.{prefix}-no-such-block }}}}")}),
            json!({}),
        ),
    ]
}

/// A custom pool template exercising env merging and defaults.
fn custom_templates() -> Vec<Value> {
    vec![
        json!({"job_configuration": {"command": "{{ command }}", "env": "{{ env }}", "image": "{{ image }}",
                "greeting": "hello {{ who }} from {{ cpu }}", "missing_embedded": "x-{{ not_defined }}-y",
                "nested": {"list": ["{{ cpu }}", "{{ not_defined }}", "lit"], "w": "{{ who }}"}},
               "variables": {"type": "object", "properties": {
                "env": {"type": "object", "default": {"POOL_DEFAULT": "1", "SHARED": "pool"}},
                "cpu": {"type": "integer", "default": 2}, "who": {"type": "string"},
                "command": {"type": "string", "default": null}, "image": {"default": "img"},
                "not_defined": {"type": "string"}}}}),
        json!({"job_configuration": {"env": {"FIXED": "f", "SHARED": "cfg", "TPL": "{{ who }}"}, "who": "{{ who }}"},
               "variables": {"properties": {"env": {"default": {"POOL": "p", "SHARED": "pool"}},
                "who": {"default": "world"}}}}),
        json!({"job_configuration": {"cpu": "{{ cpu }}"},
               "variables": {"properties": {"env": {"default": {"POOL": "p"}}, "cpu": {"default": 1.0}}}}),
        json!({"job_configuration": {"env": {"A": "a"}},
               "variables": {"properties": {"env": {"default": "not a dict"}}}}),
        json!({"job_configuration": {"x": "{{ x }}"}, "variables": {}}),
    ]
}

// ---------------------------------------------------------------------------------------------
// The Python side

fn venv_python() -> PathBuf {
    let venv = std::env::var("PREFECT_ACI_VENV3").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/prefect-aci/venvs/prefect3")
    });
    PathBuf::from(venv).join("bin/python")
}

fn reference_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../python/prefect_reference.py")
}

fn run_python(api_url: &str, prefect_home: &std::path::Path, args: &[&str]) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(reference_script())
        .args(args)
        .env("PREFECT_API_URL", api_url)
        .env("PREFECT_HOME", prefect_home)
        .env_remove("PREFECT_API_KEY")
        .env_remove("PREFECT_API_AUTH_STRING")
        .env("PYTHONHASHSEED", "0");
    for (k, v) in test_env() {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", venv_python().display()));
    assert!(
        out.status.success(),
        "prefect_reference.py {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "prefect_reference.py printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn python_outcome(result: &Value) -> Outcome {
    if let Some(v) = result.get("ok") {
        Outcome::Ok(v.clone())
    } else if result.get("notset").is_some() {
        Outcome::NotSet
    } else {
        Outcome::Error(
            result
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
        )
    }
}

/// A scratch directory (the Python side's `PREFECT_HOME` and the cases file), removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templating_matches_prefect() {
    let Ok(api_url) = std::env::var("PREFECT_ACI_TEST_API_URL") else {
        panic!(
            "PREFECT_ACI_TEST_API_URL is not set: this test compares against a live Prefect 3 \
             server and Prefect's own Python code; run it with `make test`"
        );
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scratch = Scratch(
        std::env::temp_dir().join(format!("prefect-aci-differential-{}", uuid::Uuid::new_v4())),
    );
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let scratch = &scratch.0;

    // Blocks and variables, unique to this run.
    let prefix = format!("tpl-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let fixtures = run_python(&api_url, scratch, &["setup", &prefix]);
    let block_id = |name: &str| -> String {
        fixtures["block_ids"][format!("{prefix}-{name}")]
            .as_str()
            .unwrap_or_else(|| panic!("setup did not report block {name}"))
            .to_owned()
    };
    let source = HttpSource {
        http: reqwest::Client::new(),
        api: url::Url::parse(&api_url).expect("PREFECT_ACI_TEST_API_URL is a URL"),
    };

    let env_map = test_env();
    let env = |name: &str| env_map.get(name).map(|v| (*v).to_owned());
    let mut gen = Gen {
        rng: fastrand::Rng::with_seed(SEED),
    };
    let mut cases = Cases { list: Vec::new() };

    // python_str: fixed edge values, then random ones.
    let mut printed: Vec<Value> = vec![
        json!(true),
        json!(false),
        json!(null),
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1.0),
        json!(-0.0),
        json!(0.0),
        json!(1e-05),
        json!(0.0001),
        json!(1e16),
        json!(1e15),
        json!(2.0),
        json!(5e-324),
        json!(1.7976931348623157e308),
        json!(0.1),
        json!({"a": 1, "b": [1, 2]}),
        json!([1, "x"]),
        json!([]),
        json!({}),
        json!("it's"),
        json!("say \"hi\""),
        json!("both ' and \""),
        json!("back\\slash"),
        json!("tab\tnl\ncr\r nul\u{0} del\u{7f} nbsp\u{a0} shy\u{ad} zwsp\u{200b} ls\u{2028}"),
        json!([
            "it's",
            "say \"hi\"",
            "both ' and \"",
            "\u{e000}\u{e0001}\u{10ffff}😀名\u{85}"
        ]),
        json!({"it's": {"nested": [null, true, 1.5, "ü"]}}),
    ];
    for _ in 0..150 {
        printed.push(gen.value(3));
    }
    for _ in 0..100 {
        printed.push(json!(gen.float()));
    }
    for v in printed {
        let rust = Outcome::Ok(Value::String(python_str(&v)));
        cases.push("python_str", inputs(&[("value", &v)]), rust);
    }

    // find_placeholders and apply_values on random templates.
    for _ in 0..60 {
        let t = gen.template(3, &[]);
        let mut found: Vec<Value> = find_placeholders(&t)
            .into_iter()
            .map(|p| json!([p.full_match, p.name, p.kind.as_str()]))
            .collect();
        found.sort_by_key(|v| v.to_string());
        // Python sorts lists of strings by code point; so does comparing the JSON text here
        // only if the text orders the same way, so sort both sides the same way after.
        cases.push(
            "find",
            inputs(&[("template", &t)]),
            Outcome::Ok(Value::Array(found)),
        );
    }
    for _ in 0..300 {
        let t = gen.template(3, &[]);
        let values = gen.values();
        let rust = match apply_values(&t, &values, &env) {
            Some(v) => Outcome::Ok(v),
            None => Outcome::NotSet,
        };
        cases.push(
            "apply",
            inputs(&[("template", &t), ("values", &Value::Object(values))]),
            rust,
        );
    }

    // Schema defaults.
    for _ in 0..30 {
        let mut props = Map::new();
        for i in 0..gen.rng.usize(..6) {
            let attrs = match gen.rng.u8(..5) {
                0 => json!({"type": "string"}),
                1 => json!({"default": null}),
                _ => json!({"type": "x", "default": gen.value(2)}),
            };
            props.insert(format!("v{i}"), attrs);
        }
        let rust = outcome(base_config_defaults(&props).map(Value::Object));
        cases.push(
            "defaults",
            inputs(&[("properties", &Value::Object(props))]),
            rust,
        );
    }

    // Server-side validation of base job templates.
    let mut validate_inputs = vec![
        json!({}),
        aci_template(),
        json!({"job_configuration": {}}),
        json!({"job_configuration": {"a": "{{ a }}"}, "variables": {"properties": {}}}),
        json!({"job_configuration": {"a": "{{ a }}"}, "variables": {"properties": {"a": {}}}}),
        json!({"job_configuration": {"a": "{{ $HOME }}"}, "variables": {"properties": {"a": {}}}}),
        json!({"job_configuration": {"a": "{{ ñ }}"}, "variables": {"properties": {"a": {}}}}),
        json!({"job_configuration": {"a": {"{{ k }}": 1}}, "variables": {"properties": {"a": {}}}}),
        json!({"job_configuration": {"a": "{{\nb }}"}, "variables": {"properties": {"a": {}}}}),
        json!({"job_configuration": {"a": "{{ prefect.blocks.secret.x }}"}, "variables": {"properties": {"a": {}}}}),
    ];
    for t in custom_templates() {
        validate_inputs.push(t);
    }
    for _ in 0..40 {
        let jc = gen.template(2, &[]);
        let mut props = Map::new();
        for p in find_placeholders(&jc) {
            if gen.rng.u8(..5) > 0 {
                props.insert(p.name, json!({}));
            }
        }
        let jc = match jc {
            Value::Object(m) if !m.is_empty() => Value::Object(m),
            other => json!({"x": other}),
        };
        validate_inputs.push(json!({"job_configuration": jc, "variables": {"properties": props}}));
    }
    for t in validate_inputs {
        let rust = outcome(validate_base_job_template(&t).map(|()| Value::Null));
        cases.push("validate", inputs(&[("template", &t)]), rust);
    }

    // Blocks.
    let p = &prefix;
    let multi_id = block_id("multi");
    let block_templates: Vec<Value> = vec![
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret }}}}")),
        json!(format!("prefix-{{{{ prefect.blocks.secret.{p}-secret }}}}-suffix")),
        json!(format!("{{{{prefect.blocks.tpl-string.{p}-string}}}} and {{{{ a }}}} and {{{{ prefect.variables.v }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict.value }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict.value.key }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict.key.nested-key }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict.value.list[0].list-key }}}}")),
        json!(format!("x={{{{ prefect.blocks.tpl-json.{p}-json-dict.list[2] }}}} {{{{ prefect.blocks.tpl-json.{p}-json-dict.flag }}}} {{{{ prefect.blocks.tpl-json.{p}-json-dict.none }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-dict.nope }}}}")),
        json!(format!("inline {{{{ prefect.blocks.tpl-json.{p}-json-dict }}}}")),
        json!(format!("inline {{{{ prefect.blocks.tpl-json.{p}-json-list }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-list[2].three }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-list.-2 }}}}")),
        json!(format!("n={{{{ prefect.blocks.tpl-json.{p}-json-num }}}} i={{{{ prefect.blocks.tpl-json.{p}-json-int }}}} b={{{{ prefect.blocks.tpl-json.{p}-json-bool }}}} z={{{{ prefect.blocks.tpl-json.{p}-json-null }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-null }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-json.{p}-json-tpl }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi.url }}}}:{{{{ prefect.blocks.tpl-multi.{p}-multi.port }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi.nested.a.b[1] }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi.values[0] }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi.value }}}}")),
        json!(format!("{{{{ prefect.blocks.tpl-multi.{p}-multi.url[0] }}}}")),
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret.value }}}}")),
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret.value[0] }}}}")),
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret[0] }}}}")),
        json!(format!("{{{{ prefect.blocks.secret.{p}-missing }}}}")),
        json!(format!("a {{{{ prefect.blocks.secret.{p}-missing }}}}")),
        json!("{{ prefect.blocks.only-type }}"),
        json!({"$ref": {"block_document_id": multi_id}, "other": 1}),
        json!({"$ref": {"block_document_id": block_id("secret")}}),
        json!({"$ref": {"block_document_id": "00000000-0000-0000-0000-00000000dead"}}),
        json!({"$ref": {"block_document_id": ""}, "k": format!("{{{{ prefect.blocks.secret.{p}-secret }}}}")}),
        json!({"$ref": {"other": 1}}),
        json!({"$ref": "#/definitions/x"}),
        json!({"$ref": null}),
        json!([{"a": [format!("{{{{ prefect.blocks.secret.{p}-secret }}}}"), 1, null]}, "{{ $TPL_A }}"]),
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret }}}}{{{{ prefect.blocks.secret.{p}-secret }}}}")),
        json!(format!("{{{{ prefect.variables.{}_str }}}}", p.replace('-', "_"))),
    ];
    for t in block_templates {
        let rust = outcome(resolve_block_document_references(t.clone(), &source).await);
        cases.push("blocks", inputs(&[("template", &t)]), rust);
    }

    // Variables.
    let v = prefix.replace('-', "_");
    let variable_templates: Vec<Value> = vec![
        json!(format!("{{{{ prefect.variables.{v}_str }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_int }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_float }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_bool }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_dict }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_list }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_tpl }}}}")),
        json!(format!("{{{{ prefect.variables.{v}_nope }}}}")),
        json!(format!("a={{{{ prefect.variables.{v}_int }}}} f={{{{prefect.variables.{v}_float}}}} b={{{{ prefect.variables.{v}_bool }}}} d={{{{ prefect.variables.{v}_dict }}}} l={{{{ prefect.variables.{v}_list }}}} q={{{{ prefect.variables.{v}_quote }}}} m={{{{ prefect.variables.{v}_nope }}}} {{{{ cpu }}}}")),
        json!({"k": [format!("{{{{ prefect.variables.{v}_str }}}}"), {"n": format!("{{{{ prefect.variables.{v}_int }}}}{{{{ prefect.variables.{v}_int }}}}")}], "$ref": {"block_document_id": "x"}}),
        json!(format!("{{{{ prefect.blocks.secret.{p}-secret }}}}")),
        json!(42),
    ];
    for t in variable_templates {
        let rust = outcome(resolve_variables(t.clone(), &source).await);
        cases.push("variables", inputs(&[("template", &t)]), rust);
    }

    // Whole job configurations: custom templates and the ACI template, with merged job variables.
    let aci = aci_template();
    for (dep, run) in aci_job_variable_sets(&prefix) {
        let dep = Value::String(dep.to_string().replace("__MULTI_ID__", &multi_id));
        let dep: Value = serde_json::from_str(dep.as_str().unwrap_or_default()).expect("json");
        let merged = merge_job_variables(Some(&dep), Some(&run));
        let rust = outcome(
            job_configuration_from_template_and_values(&aci, &merged, &source, &env)
                .await
                .map(Value::Object),
        );
        let run_or_empty = if run.is_null() {
            json!({})
        } else {
            run.clone()
        };
        cases.push(
            "flow_run",
            inputs(&[
                ("base_job_template", &aci),
                ("deployment_job_variables", &dep),
                ("flow_run_job_variables", &run_or_empty),
            ]),
            rust.clone(),
        );
        cases.push(
            "from_template",
            inputs(&[
                ("base_job_template", &aci),
                ("values", &Value::Object(merged)),
            ]),
            rust,
        );
    }
    let job_variable_sets = [
        json!({}),
        json!({"who": "rustacean", "env": {"RUN": "r", "SHARED": "run"}}),
        json!({"env.FOO": "x", "env": {"BAR": "y"}, "who": "{{ cpu }}"}),
        json!({"env.FOO": "x", "env.BAR.BAZ": "y"}),
        json!({"env.FOO": "x", "env.FOO.BAZ": "y"}),
        json!({"a.b": 1, "a": 2, "cpu": 1.0, "who": null}),
        json!({"env": null, "command": "", "image": {"$ref": {"block_document_id": multi_id}}}),
        json!({"env": {"N": 1, "F": 2.5, "B": true, "Z": null}, "not_defined": "now defined"}),
        json!({"arr[0]": "bracket", "x": "{{ $TPL_QUOTE }}"}),
    ];
    for t in custom_templates() {
        for values in &job_variable_sets {
            let Value::Object(values) = values else {
                unreachable!()
            };
            let rust = outcome(
                job_configuration_from_template_and_values(&t, values, &source, &env)
                    .await
                    .map(Value::Object),
            );
            cases.push(
                "from_template",
                inputs(&[
                    ("base_job_template", &t),
                    ("values", &Value::Object(values.clone())),
                ]),
                rust,
            );
        }
    }
    // Deployment and flow-run job variables through the merge.
    let merges = [
        (
            json!({"env": {"A": "1", "S": "d"}, "cpu": 1}),
            json!({"env": {"B": "2", "S": "r"}, "who": "w"}),
        ),
        (json!({"env": "{{ x }}"}), json!({"env": {"B": "2"}})),
        (json!({"cpu": 3}), json!({"env": {"B": "2"}, "cpu": 4})),
        (json!(null), json!({"env.X": "1"})),
        (json!({"env": {"A": "1"}}), json!({})),
    ];
    for t in custom_templates().into_iter().take(2) {
        for (dep, run) in &merges {
            let merged = merge_job_variables(Some(dep), Some(run));
            let rust = outcome(
                job_configuration_from_template_and_values(&t, &merged, &source, &env)
                    .await
                    .map(Value::Object),
            );
            let dep_or_empty = if dep.is_null() {
                json!({})
            } else {
                dep.clone()
            };
            cases.push(
                "flow_run",
                inputs(&[
                    ("base_job_template", &t),
                    ("deployment_job_variables", &dep_or_empty),
                    ("flow_run_job_variables", run),
                ]),
                rust,
            );
        }
    }

    assert!(cases.list.len() >= 200, "only {} cases", cases.list.len());

    // Run Prefect on the same cases and compare.
    let cases_path = scratch.join("cases.json");
    let all: Vec<&Value> = cases.list.iter().map(|c| &c.json).collect();
    std::fs::write(
        &cases_path,
        serde_json::to_vec(&all).expect("cases serialize"),
    )
    .expect("write cases");
    let results = run_python(
        &api_url,
        scratch,
        &[cases_path.to_str().expect("utf-8 path")],
    );
    let results = results.as_array().expect("a list of results");
    assert_eq!(
        results.len(),
        cases.list.len(),
        "one Python result per case"
    );

    let mut mismatches = Vec::new();
    let mut errors_on_both_sides = 0;
    for (case, result) in cases.list.iter().zip(results) {
        assert_eq!(
            case.json["id"], result["id"],
            "results arrive in case order"
        );
        let mut python = python_outcome(result);
        if case.json["kind"] == "find" {
            if let Outcome::Ok(Value::Array(items)) = &mut python {
                items.sort_by_key(|v| v.to_string());
            }
        }
        if matches!(
            (&case.rust, &python),
            (Outcome::Error(_), Outcome::Error(_))
        ) {
            errors_on_both_sides += 1;
        }
        if !outcomes_match(&case.rust, &python) {
            mismatches.push((case, python));
        }
    }
    if let Ok(path) = std::env::var("PREFECT_ACI_DIFFERENTIAL_DUMP") {
        // For debugging: every case with both answers, one JSON object per line.
        let lines: Vec<String> = cases
            .list
            .iter()
            .zip(results)
            .map(|(case, python)| {
                json!({"case": case.json, "rust": format!("{:?}", case.rust), "python": python})
                    .to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).expect("write the dump");
    }
    if let Some((case, python)) = mismatches.first() {
        panic!(
            "{} of {} cases differ from Prefect; the first:\ncase:   {}\nrust:   {:?}\npython: {:?}",
            mismatches.len(),
            cases.list.len(),
            serde_json::to_string(&case.json).unwrap_or_default(),
            case.rust,
            python
        );
    }
    eprintln!(
        "{} cases identical to Prefect 3.9.1 ({} of them errors on both sides)",
        cases.list.len(),
        errors_on_both_sides
    );
}
