//! Evaluates ARM deployment templates the way Azure Resource Manager does, for the subset of the
//! template language that real-world templates (and the Prefect ACI worker) use.
//!
//! An ARM template is plain JSON in which any string of the form `"[ … ]"` is an *expression*:
//! `"[parameters('container_group_name')]"`, `"[uniqueString(resourceGroup().id)]"`. Deploying a
//! template means binding the caller's parameter values, evaluating every expression, and
//! handing each resource's final JSON to its resource provider. [`evaluate`] does the first two
//! steps and returns the resources (and outputs) ready for the emulator to create.
//!
//! # Evaluation order (as in ARM)
//!
//! 1. **Parameters.** Supplied values (`{"name": {"value": …}}`, or a whole parameters file)
//!    are matched case-insensitively against the template's declarations; undeclared ones are
//!    refused. Missing values fall back to `defaultValue`, which may itself be an expression
//!    (`[resourceGroup().location]`) and may refer to other parameters but not to variables.
//!    Each value is then checked against `type`, `allowedValues`, `minLength`/`maxLength` and
//!    `minValue`/`maxValue`.
//! 2. **Variables**, lazily and with cycle detection, so they may refer to parameters and to
//!    each other in any order.
//! 3. **Resources**, in order: `condition` (a false one is skipped), then every property.
//!    Nested child resources are flattened with their parent's type and name prefixed. Each
//!    gets its full ARM id; `dependsOn` entries (ids, `type/name` or bare names) must name a
//!    resource of the template (dependencies on condition-skipped resources are dropped), and
//!    the result is ordered so dependencies come first, with cycles refused.
//! 4. **Outputs**, type-checked against their declared `type`.
//!
//! # Expression language
//!
//! A string that starts with `[` and ends with `]` is an expression, unless it starts with
//! `[[`, which escapes a literal `[` (`"[[x]"` is the string `[x]`). Inside, string literals
//! use single quotes with `''` as the escape, integers may be negative, function names and
//! property names are case-insensitive, and results can be dereferenced with `.name`,
//! `['name']` and `[0]`. `if()` evaluates only the branch it picks. Object keys are evaluated
//! too, as ARM does for `"userAssignedIdentities": {"[resourceId(…)]": {}}`.
//!
//! Supported functions: `parameters`, `variables`, `deployment`, `resourceGroup`,
//! `subscription`, `tenant`, `environment`, `resourceId`, `subscriptionResourceId`,
//! `tenantResourceId`, `extensionResourceId`, `uniqueString`, `guid`, `newGuid` (parameter
//! defaults only, as in ARM), `concat`, `format`, `toLower`, `toUpper`, `string`, `int`,
//! `bool`, `json`, `replace`, `substring`, `take`, `skip`, `contains`, `startsWith`,
//! `endsWith`, `indexOf`, `lastIndexOf`, `trim`, `split`, `join`, `first`, `last`, `padLeft`,
//! `base64`, `base64ToString`, `empty`, `length`, `createArray`, `createObject`, `array`,
//! `union`, `coalesce`, `range`, `min`, `max`, `add`, `sub`, `mul`, `div`, `mod`, `equals`,
//! `less`, `lessOrEquals`, `greater`, `greaterOrEquals`, `and`, `or`, `not`, `if`, `true`,
//! `false`, `null`, `copyIndex`.
//!
//! # Copy loops
//!
//! All four kinds of iteration work: resource `copy` (`{"name", "count"}`, one resource per
//! index; `dependsOn` may name the loop), property `copy` arrays inside any object
//! (`{"name", "count", "input"}` becomes the array property `name`), top-level variable
//! `copy`, and output `copy`. `copyIndex()` reads the innermost loop, `copyIndex('name')` a
//! named one, both with an optional offset. `count` may be 0 to 800, ARM's limit. `mode` and
//! `batchSize` are accepted and ignored: the emulator deploys sequentially anyway.
//!
//! # Refused
//!
//! Anything needing live state (`reference`, `list*`, `utcNow`, …), user-defined
//! functions and symbolic-name (`languageVersion` 2.0) templates are refused with an
//! `InvalidTemplate` error that names the function or feature and the JSON path where it was
//! found, so a user sees exactly what the emulator cannot do instead of a half-applied
//! deployment.
//!
//! # Hash functions
//!
//! `uniqueString` and `guid` match Azure bit for bit, so names derived from them are the same
//! in the emulator as in a real subscription:
//!
//! - `uniqueString(a, b, …)` hashes the UTF-8 bytes of the arguments joined with `-` with the
//!   64-bit MurmurHash variant ARM uses (two interleaved 32-bit lanes, ARM's own constants) and
//!   writes the top 65 bits as 13 characters of lowercase RFC 4648 base32 (`a-z2-7`). Test
//!   vectors below are values Azure returns.
//! - `guid(a, b, …)` is a version-5 UUID under ARM's namespace
//!   `11fb06fb-712d-4ddd-98c7-e71bbd588830` over the arguments joined with `-`.
//!
//! # Errors
//!
//! [`TemplateError`]'s `Display` is the text ARM puts in `error.message`
//! (`Deployment template validation failed: '…'.`), because the emulator returns it to clients
//! that may show or match it; that is why these messages are capitalised, unlike the rest of the
//! crate. ARM reports a line and column; a `serde_json::Value` has none, so the messages name
//! the JSON path instead (`resources[0].properties.containers[0].name`). Parameter values never
//! appear in messages, so secure parameters cannot leak.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use uuid::Uuid;

/// Where a deployment runs: the values `resourceGroup()`, `subscription()`, `tenant()` and
/// `deployment()` expose to the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentContext {
    /// Subscription GUID.
    pub subscription_id: String,
    /// Tenant GUID.
    pub tenant_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Resource group location, e.g. `eastus`.
    pub location: String,
    /// Deployment name.
    pub deployment_name: String,
}

impl DeploymentContext {
    /// `/subscriptions/{s}/resourceGroups/{rg}`, the value of `resourceGroup().id`.
    pub fn resource_group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription_id, self.resource_group
        )
    }
}

/// A template after evaluation: the resources to create and the deployment outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedTemplate {
    /// The parameter values the deployment ran with, in the shape of a deployment's
    /// `properties.parameters`: `{"name": {"type": "String", "value": …}}`, in declaration
    /// order. Secure parameters carry no `value`, as in ARM.
    pub parameters: Map<String, Value>,
    /// Resources in an order that respects `dependsOn` (template order otherwise, children
    /// after their parent), skipping those whose `condition` was false.
    pub resources: Vec<EvaluatedResource>,
    /// Outputs in the shape of a deployment's `properties.outputs`:
    /// `{"name": {"type": "String", "value": …}}`. Secure outputs carry no `value`, as in ARM.
    pub outputs: Map<String, Value>,
}

/// One resource with every expression evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedResource {
    /// Full ARM id in the deployment's resource group, e.g.
    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}`.
    pub id: String,
    /// Full resource type, e.g. `Microsoft.ContainerInstance/containerGroups`.
    pub type_: String,
    /// The `apiVersion` the template asked for.
    pub api_version: String,
    /// Full resource name (`parent/child` for child resources).
    pub name: String,
    /// `location`, if the resource has one.
    pub location: Option<String>,
    /// The resource JSON with every expression evaluated (`type`, `apiVersion`, `name`,
    /// `location`, `identity`, `tags`, `sku`, `properties`, …) minus the template-only keys
    /// `condition`, `dependsOn`, `copy` and nested `resources`.
    pub body: Value,
    /// Evaluated `dependsOn` entries (resource ids or names, as written). Entries that point
    /// at a resource skipped by its `condition` are dropped, as ARM does.
    pub depends_on: Vec<String>,
}

/// Why a template could not be evaluated. Every variant is reported by ARM with the code
/// `InvalidTemplate` (see [`TemplateError::code`]); `Display` gives ARM's message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template document is malformed (not an object, `resources` missing, a resource
    /// without `type`, a duplicate resource, …).
    #[error("Deployment template validation failed: '{message}'.")]
    InvalidTemplate {
        /// Template-relative JSON path of the offending value.
        path: String,
        /// What is wrong, in ARM's words where ARM has them.
        message: String,
    },
    /// A parameter has no supplied value and no `defaultValue`.
    #[error(
        "Deployment template validation failed: 'The value for the template parameter '{name}' at path '{path}' is not provided. Please see https://aka.ms/arm-create-parameter-file for usage details.'."
    )]
    MissingParameter {
        /// Parameter name as declared.
        name: String,
        /// `parameters.{name}`.
        path: String,
    },
    /// Values were supplied for parameters the template does not declare.
    #[error(
        "Deployment template validation failed: 'The template parameters '{}' in the parameters file are not valid; they are not present in the original template and can therefore not be provided at deployment time. The only supported parameters for this template are '{}'. Please see https://aka.ms/arm-pass-parameter-values for usage details.'.",
        names.join(", "),
        supported.join(", ")
    )]
    UnknownParameters {
        /// The undeclared names, as supplied.
        names: Vec<String>,
        /// The names the template declares.
        supported: Vec<String>,
    },
    /// A parameter value (supplied or default) has the wrong type or breaks a constraint.
    #[error(
        "Deployment template validation failed: 'The provided value for the template parameter '{name}' at path '{path}' is not valid. {reason}'."
    )]
    InvalidParameterValue {
        /// Parameter name as declared.
        name: String,
        /// `parameters.{name}`.
        path: String,
        /// Which rule the value breaks (never the value itself).
        reason: String,
    },
    /// The template calls an ARM function this emulator does not implement.
    #[error(
        "Deployment template validation failed: 'The template function '{function}' at path '{path}' is not supported by this emulator. Please see https://aka.ms/arm-functions for usage details.'."
    )]
    UnsupportedFunction {
        /// The function name as written.
        function: String,
        /// Path of the string holding the expression.
        path: String,
    },
    /// The template calls a function ARM does not have either.
    #[error(
        "Deployment template validation failed: 'The template function '{function}' at path '{path}' is not valid. Please see https://aka.ms/arm-functions for usage details.'."
    )]
    UnknownFunction {
        /// The function name as written.
        function: String,
        /// Path of the string holding the expression.
        path: String,
    },
    /// The template uses a template feature this emulator does not implement (user-defined
    /// functions, symbolic-name templates, Key Vault parameter references).
    #[error(
        "Deployment template validation failed: 'The template feature '{feature}' at path '{path}' is not supported by this emulator. Please see https://aka.ms/arm-syntax for usage details.'."
    )]
    UnsupportedFeature {
        /// The feature, e.g. `copy`.
        feature: String,
        /// Where it was found.
        path: String,
    },
    /// An expression failed to parse or to evaluate (wrong argument types, missing property,
    /// unknown parameter or variable, …).
    #[error(
        "Deployment template validation failed: 'The template language expression at path '{path}' is not valid: {message} Please see https://aka.ms/arm-template-expressions for usage details.'."
    )]
    Expression {
        /// Path of the string holding the expression.
        path: String,
        /// What went wrong, in ARM's words where ARM has them.
        message: String,
    },
}

impl TemplateError {
    /// The ARM error code: `InvalidTemplate` for every template validation failure, which is
    /// what ARM answers for bad templates, missing or undeclared parameters and bad values.
    pub fn code(&self) -> &'static str {
        "InvalidTemplate"
    }

    /// The template-relative JSON path of the failing value (`parameters.x`,
    /// `resources[0].name`); empty when the error concerns the parameters as a whole.
    pub fn path(&self) -> &str {
        match self {
            TemplateError::InvalidTemplate { path, .. }
            | TemplateError::MissingParameter { path, .. }
            | TemplateError::InvalidParameterValue { path, .. }
            | TemplateError::UnsupportedFunction { path, .. }
            | TemplateError::UnknownFunction { path, .. }
            | TemplateError::UnsupportedFeature { path, .. }
            | TemplateError::Expression { path, .. } => path,
            TemplateError::UnknownParameters { .. } => "",
        }
    }

    /// The error as ARM's `error` object: `code`, `message` and an `additionalInfo` entry of
    /// type `TemplateViolation` whose `path` is relative to the deployment body
    /// (`properties.template.…`), as ARM reports it. Line and column are 0: unknown here.
    pub fn to_arm_error(&self) -> Value {
        let path = match self.path() {
            "" => String::new(),
            p => format!("properties.template.{p}"),
        };
        serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "additionalInfo": [{
                "type": "TemplateViolation",
                "info": {"lineNumber": 0, "linePosition": 0, "path": path}
            }]
        })
    }
}

/// Evaluates `template` with the supplied `parameters` for a deployment in `ctx`.
///
/// `parameters` is a deployment's `properties.parameters` (`{"p": {"value": …}}`), a whole
/// parameters file (`{"$schema": …, "parameters": {…}}`), or `null` for none.
pub fn evaluate(
    template: &Value,
    parameters: &Value,
    ctx: &DeploymentContext,
) -> Result<EvaluatedTemplate, TemplateError> {
    let template = template
        .as_object()
        .ok_or_else(|| TemplateError::InvalidTemplate {
            path: String::new(),
            message: "The template must be a JSON object.".to_string(),
        })?;
    check_template_shape(template)?;
    let mut ev = Evaluator::new(template, parameters, ctx)?;
    ev.evaluate_all_parameters()?;
    ev.evaluate_all_variables()?;
    let resources = ev.evaluate_resources()?;
    let outputs = ev.evaluate_outputs()?;
    Ok(EvaluatedTemplate {
        parameters: ev.parameter_values(),
        resources,
        outputs,
    })
}

/// ARM's `uniqueString(...)`: a 13-character lowercase base32 hash of the parts joined with `-`.
pub fn unique_string(parts: &[&str]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut hash = murmur64(parts.join("-").as_bytes());
    let mut out = String::with_capacity(13);
    for _ in 0..13 {
        out.push(ALPHABET[(hash >> 59) as usize] as char);
        hash <<= 5;
    }
    out
}

/// ARM's `guid(...)`: UUID version 5 under ARM's namespace over the parts joined with `-`.
pub fn arm_guid(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&ARM_GUID_NAMESPACE, parts.join("-").as_bytes())
}

/// The namespace of ARM's `guid()` function (`rbac` keeps its own copy to stay standalone).
const ARM_GUID_NAMESPACE: Uuid = Uuid::from_u128(0x11fb06fb_712d_4ddd_98c7_e71bbd588830);

/// The 64-bit MurmurHash variant behind ARM's `uniqueString`: two 32-bit lanes over 8-byte
/// little-endian blocks, mixed into each other, with ARM's own multipliers and offsets.
fn murmur64(data: &[u8]) -> u64 {
    const C1: u32 = 0x239b_961b; // 597399067
    const C2: u32 = 0xab0e_9789; // 2869860233
    const C3: u32 = 0x85eb_ca6b; // 2246822507 (fmix32)
    const C4: u32 = 0xc2b2_ae35; // 3266489909 (fmix32)
    let le = |bytes: &[u8]| -> u32 {
        bytes
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
    };
    let (mut h1, mut h2) = (0u32, 0u32);
    let blocks = data.chunks_exact(8);
    let tail = blocks.remainder();
    for block in blocks {
        let k1 = le(&block[..4])
            .wrapping_mul(C1)
            .rotate_left(15)
            .wrapping_mul(C2);
        h1 = (h1 ^ k1).rotate_left(19).wrapping_add(h2);
        h1 = h1.wrapping_mul(5).wrapping_add(0x561c_cd1b);
        let k2 = le(&block[4..])
            .wrapping_mul(C2)
            .rotate_left(17)
            .wrapping_mul(C1);
        h2 = (h2 ^ k2).rotate_left(13).wrapping_add(h1);
        h2 = h2.wrapping_mul(5).wrapping_add(0x0bca_a747);
    }
    if !tail.is_empty() {
        let k1 = le(&tail[..tail.len().min(4)])
            .wrapping_mul(C1)
            .rotate_left(15)
            .wrapping_mul(C2);
        h1 ^= k1;
        if tail.len() > 4 {
            let k2 = le(&tail[4..])
                .wrapping_mul(C2)
                .rotate_left(17)
                .wrapping_mul(C1);
            h2 ^= k2;
        }
    }
    // Lengths above 4 GiB cannot reach an ARM template; truncation matches ARM's 32-bit length.
    let len = data.len() as u32;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    let fmix = |mut h: u32| {
        h ^= h >> 16;
        h = h.wrapping_mul(C3);
        h ^= h >> 13;
        h = h.wrapping_mul(C4);
        h ^ (h >> 16)
    };
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (u64::from(h2) << 32) | u64::from(h1)
}

// ---------------------------------------------------------------------------------------------
// Template structure
// ---------------------------------------------------------------------------------------------

fn check_template_shape(template: &Map<String, Value>) -> Result<(), TemplateError> {
    if let Some(version) = template.get("languageVersion") {
        return Err(TemplateError::UnsupportedFeature {
            feature: format!(
                "languageVersion {}",
                version.as_str().unwrap_or("(non-string)")
            ),
            path: "languageVersion".to_string(),
        });
    }
    if let Some(functions) = template.get("functions") {
        if functions.as_array().is_some_and(|f| !f.is_empty()) {
            return Err(TemplateError::UnsupportedFeature {
                feature: "user-defined functions".to_string(),
                path: "functions".to_string(),
            });
        }
    }
    for (key, expected) in [
        ("parameters", "object"),
        ("variables", "object"),
        ("outputs", "object"),
    ] {
        if let Some(v) = template.get(key) {
            if !v.is_object() && !v.is_null() {
                return Err(TemplateError::InvalidTemplate {
                    path: key.to_string(),
                    message: format!("The template property '{key}' must be a JSON {expected}."),
                });
            }
        }
    }
    match template.get("resources") {
        Some(Value::Array(_)) => Ok(()),
        Some(Value::Object(_)) => Err(TemplateError::UnsupportedFeature {
            feature: "symbolic resource names".to_string(),
            path: "resources".to_string(),
        }),
        Some(_) => Err(TemplateError::InvalidTemplate {
            path: "resources".to_string(),
            message: "The template property 'resources' must be a JSON array.".to_string(),
        }),
        None => Err(TemplateError::InvalidTemplate {
            path: "resources".to_string(),
            message: "Required property 'resources' not found in JSON.".to_string(),
        }),
    }
}

fn object_field<'a>(template: &'a Map<String, Value>, key: &str) -> Vec<(&'a String, &'a Value)> {
    template
        .get(key)
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

/// Appends an object key to a path, bracket-quoting keys that are not plain identifiers.
fn child_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    match (base.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{base}.{key}"),
        (_, false) => format!("{base}['{}']", key.replace('\'', "''")),
    }
}

fn index_path(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

// ---------------------------------------------------------------------------------------------
// Evaluator
// ---------------------------------------------------------------------------------------------

/// What the expression being evaluated is allowed to reach: ARM forbids `variables()` in
/// parameter defaults and allows `newGuid()`/`utcNow()` only there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    ParameterDefault,
    Body,
}

struct ParamDecl<'a> {
    name: &'a str,
    decl: &'a Map<String, Value>,
}

struct Evaluator<'a> {
    ctx: &'a DeploymentContext,
    template: &'a Map<String, Value>,
    /// Declarations keyed by lower-cased name (ARM names are case-insensitive).
    params: HashMap<String, ParamDecl<'a>>,
    param_order: Vec<String>,
    /// Supplied values keyed by lower-cased name.
    supplied: HashMap<String, &'a Value>,
    param_values: HashMap<String, Value>,
    params_in_progress: HashSet<String>,
    /// Declarations keyed by lower-cased name; `true` marks a variable defined by a
    /// top-level `copy` element (its value is the element: `{name, count, input}`).
    variables: HashMap<String, (&'a str, &'a Value, bool)>,
    variable_order: Vec<String>,
    variable_values: HashMap<String, Value>,
    variables_in_progress: HashSet<String>,
    /// How many resources a false `condition` skipped; dependencies on them are dropped.
    skipped_resources: usize,
    /// The copy loops being expanded, innermost last: (loop name, current index).
    copy_stack: Vec<(String, i64)>,
    /// Resource copy loops by lower-cased name, with the ids of their instances, so
    /// `dependsOn` can name a whole loop.
    copy_loops: HashMap<String, Vec<String>>,
}

impl<'a> Evaluator<'a> {
    fn new(
        template: &'a Map<String, Value>,
        parameters: &'a Value,
        ctx: &'a DeploymentContext,
    ) -> Result<Self, TemplateError> {
        let mut params = HashMap::new();
        let mut param_order = Vec::new();
        for (name, decl) in object_field(template, "parameters") {
            let decl = decl
                .as_object()
                .ok_or_else(|| TemplateError::InvalidTemplate {
                    path: child_path("parameters", name),
                    message: format!(
                        "The template parameter '{name}' must be a JSON object with a 'type'."
                    ),
                })?;
            let key = name.to_lowercase();
            if params
                .insert(key.clone(), ParamDecl { name, decl })
                .is_some()
            {
                return Err(TemplateError::InvalidTemplate {
                    path: child_path("parameters", name),
                    message: format!("The template parameter '{name}' is declared more than once (names are case-insensitive)."),
                });
            }
            param_order.push(key);
        }

        let supplied_map = supplied_parameters(parameters)?;
        let mut supplied = HashMap::new();
        let mut unknown = Vec::new();
        for (name, entry) in supplied_map {
            let key = name.to_lowercase();
            if !params.contains_key(&key) {
                unknown.push(name.clone());
                continue;
            }
            let entry_obj = entry.as_object();
            if entry_obj.is_some_and(|o| o.contains_key("reference")) {
                return Err(TemplateError::UnsupportedFeature {
                    feature: "Key Vault parameter references".to_string(),
                    path: child_path("parameters", name),
                });
            }
            match entry_obj.and_then(|o| o.get("value")) {
                Some(value) => {
                    supplied.insert(key, value);
                }
                None => {
                    return Err(TemplateError::InvalidParameterValue {
                        name: name.clone(),
                        path: child_path("parameters", name),
                        reason: "A supplied parameter must be an object with a 'value' property, e.g. {\"value\": \"…\"}.".to_string(),
                    })
                }
            }
        }
        if !unknown.is_empty() {
            return Err(TemplateError::UnknownParameters {
                names: unknown,
                supported: param_order
                    .iter()
                    .filter_map(|k| params.get(k).map(|p| p.name.to_string()))
                    .collect(),
            });
        }

        let mut variables = HashMap::new();
        let mut variable_order = Vec::new();
        for (name, value) in object_field(template, "variables") {
            if name.eq_ignore_ascii_case("copy") {
                // Variable iteration: each element defines an array variable.
                let copy_path = child_path("variables", name);
                let elements = value.as_array().ok_or_else(|| TemplateError::InvalidTemplate {
                    path: copy_path.clone(),
                    message: "The 'copy' property of 'variables' must be an array of {\"name\", \"count\", \"input\"} objects.".to_string(),
                })?;
                for (i, element) in elements.iter().enumerate() {
                    let copy_name = copy_spec_name(element, &index_path(&copy_path, i))?;
                    let key = copy_name.to_lowercase();
                    variables.insert(key.clone(), (copy_name, element, true));
                    variable_order.push(key);
                }
                continue;
            }
            let key = name.to_lowercase();
            variables.insert(key.clone(), (name.as_str(), value, false));
            variable_order.push(key);
        }

        Ok(Evaluator {
            ctx,
            template,
            params,
            param_order,
            supplied,
            param_values: HashMap::new(),
            params_in_progress: HashSet::new(),
            variables,
            variable_order,
            variable_values: HashMap::new(),
            variables_in_progress: HashSet::new(),
            skipped_resources: 0,
            copy_stack: Vec::new(),
            copy_loops: HashMap::new(),
        })
    }

    fn evaluate_all_parameters(&mut self) -> Result<(), TemplateError> {
        for key in self.param_order.clone() {
            self.parameter(&key, "parameters")?;
        }
        Ok(())
    }

    fn evaluate_all_variables(&mut self) -> Result<(), TemplateError> {
        for key in self.variable_order.clone() {
            self.variable(&key, "variables")?;
        }
        Ok(())
    }

    /// The value of a parameter (by any casing), computing and checking it on first use.
    fn parameter(&mut self, name: &str, at: &str) -> Result<Value, TemplateError> {
        let key = name.to_lowercase();
        if let Some(v) = self.param_values.get(&key) {
            return Ok(v.clone());
        }
        let Some(decl) = self.params.get(&key) else {
            return Err(TemplateError::Expression {
                path: at.to_string(),
                message: format!("The template parameter '{name}' is not found."),
            });
        };
        let (decl_name, decl) = (decl.name, decl.decl);
        let path = child_path("parameters", decl_name);
        if !self.params_in_progress.insert(key.clone()) {
            return Err(TemplateError::Expression {
                path,
                message: format!("The template parameter '{decl_name}' refers to itself through its default value."),
            });
        }
        let value = match self.supplied.get(&key) {
            Some(v) => (*v).clone(),
            None => match decl.get("defaultValue") {
                Some(default) => self.eval_value(
                    default,
                    &child_path(&path, "defaultValue"),
                    Site::ParameterDefault,
                )?,
                None => {
                    return Err(TemplateError::MissingParameter {
                        name: decl_name.to_string(),
                        path,
                    })
                }
            },
        };
        check_parameter(decl_name, &path, decl, &value)?;
        self.params_in_progress.remove(&key);
        self.param_values.insert(key, value.clone());
        Ok(value)
    }

    fn variable(&mut self, name: &str, at: &str) -> Result<Value, TemplateError> {
        let key = name.to_lowercase();
        if let Some(v) = self.variable_values.get(&key) {
            return Ok(v.clone());
        }
        let Some(&(decl_name, raw, from_copy)) = self.variables.get(&key) else {
            return Err(TemplateError::Expression {
                path: at.to_string(),
                message: format!("The template variable '{name}' is not found."),
            });
        };
        let path = child_path("variables", decl_name);
        if !self.variables_in_progress.insert(key.clone()) {
            return Err(TemplateError::Expression {
                path,
                message: format!(
                    "The template variable '{decl_name}' refers to itself (a circular reference)."
                ),
            });
        }
        let value = if from_copy {
            Value::Array(self.expand_copy(raw, &path, Site::Body, true)?)
        } else {
            self.eval_value(raw, &path, Site::Body)?
        };
        self.variables_in_progress.remove(&key);
        self.variable_values.insert(key, value.clone());
        Ok(value)
    }

    fn evaluate_resources(&mut self) -> Result<Vec<EvaluatedResource>, TemplateError> {
        let mut out = Vec::new();
        let resources = self.template.get("resources").and_then(Value::as_array);
        for (i, resource) in resources.into_iter().flatten().enumerate() {
            self.evaluate_resource(resource, &index_path("resources", i), None, &mut out)?;
        }
        let mut seen = HashSet::new();
        for r in &out {
            if !seen.insert(r.id.to_lowercase()) {
                return Err(TemplateError::InvalidTemplate {
                    path: "resources".to_string(),
                    message: format!(
                        "The resource '{}/{}' is defined multiple times in a template. Please see https://aka.ms/arm-syntax-resources for usage details.",
                        r.type_, r.name
                    ),
                });
            }
        }
        order_by_dependencies(out, self.skipped_resources > 0, &self.copy_loops)
    }

    /// The parameter values in `properties.parameters` shape, secure ones without a value.
    fn parameter_values(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for key in &self.param_order {
            let (Some(decl), Some(value)) = (self.params.get(key), self.param_values.get(key))
            else {
                continue;
            };
            let kind = decl
                .decl
                .get("type")
                .and_then(Value::as_str)
                .and_then(ParamType::parse)
                .unwrap_or(ParamType::Object);
            let mut entry = Map::new();
            entry.insert(
                "type".to_string(),
                Value::String(kind.arm_name().to_string()),
            );
            if !kind.is_secure() {
                entry.insert("value".to_string(), value.clone());
            }
            out.insert(decl.name.to_string(), Value::Object(entry));
        }
        out
    }

    fn evaluate_resource(
        &mut self,
        resource: &Value,
        path: &str,
        parent: Option<(&str, &str)>,
        out: &mut Vec<EvaluatedResource>,
    ) -> Result<(), TemplateError> {
        let obj = resource
            .as_object()
            .ok_or_else(|| TemplateError::InvalidTemplate {
                path: path.to_string(),
                message: "A template resource must be a JSON object.".to_string(),
            })?;
        let Some(spec) = obj.get("copy") else {
            self.evaluate_resource_instance(obj, path, parent, out)?;
            return Ok(());
        };
        // Resource iteration: one instance per index, each evaluated with `copyIndex()`.
        let copy_path = child_path(path, "copy");
        let loop_name = copy_spec_name(spec, &copy_path)?.to_string();
        let count = self.copy_count(spec, &copy_path)?;
        let mut ids = Vec::new();
        for i in 0..count {
            self.copy_stack.push((loop_name.clone(), i));
            let instance = self.evaluate_resource_instance(obj, path, parent, out);
            self.copy_stack.pop();
            ids.extend(instance?);
        }
        self.copy_loops
            .entry(loop_name.to_lowercase())
            .or_default()
            .extend(ids);
        Ok(())
    }

    /// Evaluates one resource (one copy instance) and its children; returns the id of the
    /// resource, or `None` when its condition skipped it.
    fn evaluate_resource_instance(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        parent: Option<(&str, &str)>,
        out: &mut Vec<EvaluatedResource>,
    ) -> Result<Option<String>, TemplateError> {
        if let Some(condition) = obj.get("condition") {
            let cpath = child_path(path, "condition");
            match self.eval_value(condition, &cpath, Site::Body)? {
                Value::Bool(true) => {}
                Value::Bool(false) => {
                    self.skipped_resources += 1;
                    return Ok(None);
                }
                other => {
                    return Err(TemplateError::InvalidTemplate {
                        path: cpath,
                        message: format!(
                            "The template resource condition must evaluate to a boolean, not {}.",
                            type_name(&other)
                        ),
                    })
                }
            }
        }

        let mut body = Map::new();
        let mut depends_on = Vec::new();
        for (key, value) in obj {
            let kpath = child_path(path, key);
            match key.as_str() {
                "condition" | "copy" | "resources" => {}
                "dependsOn" => {
                    let list = value.as_array().ok_or_else(|| TemplateError::InvalidTemplate {
                        path: kpath.clone(),
                        message: "The template resource property 'dependsOn' must be an array of strings.".to_string(),
                    })?;
                    for (i, dep) in list.iter().enumerate() {
                        let dpath = index_path(&kpath, i);
                        match self.eval_value(dep, &dpath, Site::Body)? {
                            Value::String(s) => depends_on.push(s),
                            other => {
                                return Err(TemplateError::InvalidTemplate {
                                    path: dpath,
                                    message: format!(
                                        "A 'dependsOn' entry must evaluate to a string, not {}.",
                                        type_name(&other)
                                    ),
                                })
                            }
                        }
                    }
                }
                _ => {
                    let v = self.eval_value(value, &kpath, Site::Body)?;
                    body.insert(key.clone(), v);
                }
            }
        }

        let required = |body: &Map<String, Value>, key: &str| -> Result<String, TemplateError> {
            match body.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(other) => Err(TemplateError::InvalidTemplate {
                    path: child_path(path, key),
                    message: format!(
                        "The template resource property '{key}' must be a non-empty string, not {}.",
                        type_name(other)
                    ),
                }),
                None => Err(TemplateError::InvalidTemplate {
                    path: path.to_string(),
                    message: format!("The template resource at '{path}' is missing the required property '{key}'."),
                }),
            }
        };
        let mut type_ = required(&body, "type")?;
        let api_version = required(&body, "apiVersion")?;
        let mut name = required(&body, "name")?;
        if let Some((parent_type, parent_name)) = parent {
            // Child resources may use short (`containers`) or full type and name forms.
            if !type_.contains('/') {
                type_ = format!("{parent_type}/{type_}");
                body.insert("type".to_string(), Value::String(type_.clone()));
            }
            let expected_segments = type_.split('/').count() - 1;
            if name.split('/').count() < expected_segments {
                name = format!("{parent_name}/{name}");
                body.insert("name".to_string(), Value::String(name.clone()));
            }
        }
        let location = match body.get("location") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(TemplateError::InvalidTemplate {
                    path: child_path(path, "location"),
                    message: format!(
                        "The template resource property 'location' must be a string, not {}.",
                        type_name(other)
                    ),
                })
            }
        };
        let id = resource_id_in_group(self.ctx, &type_, &name).ok_or_else(|| {
            TemplateError::InvalidTemplate {
                path: path.to_string(),
                message: format!(
                    "The template resource '{name}' for type '{type_}' has incorrect segment lengths. A nested resource type must have identical number of segments as its resource name. A root resource type must have segment length one greater than its resource name. Please see https://aka.ms/arm-syntax-resources for usage details."
                ),
            }
        })?;
        out.push(EvaluatedResource {
            id: id.clone(),
            type_: type_.clone(),
            api_version,
            name: name.clone(),
            location,
            body: Value::Object(body),
            depends_on,
        });

        if let Some(children) = obj.get("resources") {
            let cpath = child_path(path, "resources");
            let list = children
                .as_array()
                .ok_or_else(|| TemplateError::InvalidTemplate {
                    path: cpath.clone(),
                    message: "Nested 'resources' must be a JSON array.".to_string(),
                })?;
            for (i, child) in list.iter().enumerate() {
                self.evaluate_resource(child, &index_path(&cpath, i), Some((&type_, &name)), out)?;
            }
        }
        Ok(Some(id))
    }

    /// Expands a `{name, count, input}` copy element into its array of evaluated inputs.
    fn expand_copy(
        &mut self,
        spec: &Value,
        path: &str,
        site: Site,
        named: bool,
    ) -> Result<Vec<Value>, TemplateError> {
        let name = if named {
            copy_spec_name(spec, path)?.to_string()
        } else {
            String::new()
        };
        let count = self.copy_count(spec, path)?;
        let input = spec
            .get("input")
            .ok_or_else(|| TemplateError::InvalidTemplate {
                path: path.to_string(),
                message: "A 'copy' element needs an 'input' (the value produced for each index)."
                    .to_string(),
            })?;
        let input_path = child_path(path, "input");
        let mut items = Vec::new();
        for i in 0..count {
            self.copy_stack.push((name.clone(), i));
            let item = self.eval_value(input, &input_path, site);
            self.copy_stack.pop();
            items.push(item?);
        }
        Ok(items)
    }

    /// The evaluated `count` of a copy element: an integer from 0 to 800, ARM's limit.
    fn copy_count(&mut self, spec: &Value, path: &str) -> Result<i64, TemplateError> {
        let count_path = child_path(path, "count");
        let raw = spec
            .get("count")
            .ok_or_else(|| TemplateError::InvalidTemplate {
                path: path.to_string(),
                message: "A 'copy' element needs a 'count'.".to_string(),
            })?;
        match self.eval_value(raw, &count_path, Site::Body)? {
            Value::Number(n)
                if n.as_i64()
                    .is_some_and(|c| (0..=MAX_COPY_COUNT).contains(&c)) =>
            {
                Ok(n.as_i64().unwrap_or(0))
            }
            other => Err(TemplateError::InvalidTemplate {
                path: count_path,
                message: format!(
                    "The copy count must be an integer between 0 and {MAX_COPY_COUNT}; got {}.",
                    match other {
                        Value::Number(n) => format!("'{n}'"),
                        v => type_name(&v),
                    }
                ),
            }),
        }
    }

    /// `copyIndex([loopName], [offset])`: the current index of the innermost (or the named)
    /// copy loop, plus the offset.
    fn copy_index(&self, f: &Call) -> Result<Value, TemplateError> {
        f.count(0, 2)?;
        let (name, offset): (Option<String>, i64) = match f.args {
            [] => (None, 0),
            [Value::String(n)] => (Some(n.clone()), 0),
            [_] => (None, f.int_at(0)?),
            _ => (Some(f.string_at(0)?), f.int_at(1)?),
        };
        let found = match name.as_deref() {
            None => self.copy_stack.last(),
            Some(n) => self
                .copy_stack
                .iter()
                .rev()
                .find(|(loop_name, _)| loop_name.eq_ignore_ascii_case(n)),
        };
        let Some((_, index)) = found else {
            let which = name.map(|n| format!(" (loop '{n}')")).unwrap_or_default();
            return Err(f.err(format!(
                "The template function 'copyIndex'{which} is not expected at this location. The function can only be used within a copy loop."
            )));
        };
        index
            .checked_add(offset)
            .map(Value::from)
            .ok_or_else(|| f.err("The copyIndex offset is out of range.".to_string()))
    }

    fn evaluate_outputs(&mut self) -> Result<Map<String, Value>, TemplateError> {
        let mut outputs = Map::new();
        for (name, decl) in object_field(self.template, "outputs") {
            let path = child_path("outputs", name);
            let decl = decl
                .as_object()
                .ok_or_else(|| TemplateError::InvalidTemplate {
                    path: path.clone(),
                    message: format!(
                        "The template output '{name}' must be an object with 'type' and 'value'."
                    ),
                })?;
            if let Some(condition) = decl.get("condition") {
                let cpath = child_path(&path, "condition");
                if self.eval_value(condition, &cpath, Site::Body)? == Value::Bool(false) {
                    continue;
                }
            }
            let declared = decl.get("type").and_then(Value::as_str).unwrap_or("");
            let Some(kind) = ParamType::parse(declared) else {
                return Err(TemplateError::InvalidTemplate {
                    path: child_path(&path, "type"),
                    message: format!(
                        "The template output '{name}' has type '{declared}'; expected one of 'string', 'securestring', 'int', 'bool', 'object', 'secureObject', 'array'."
                    ),
                });
            };
            let (value, vpath) = if let Some(spec) = decl.get("copy") {
                // Output iteration: an unnamed loop producing the array value.
                let cpath = child_path(&path, "copy");
                let items = self.expand_copy(spec, &cpath, Site::Body, false)?;
                (Value::Array(items), cpath)
            } else {
                let raw = decl
                    .get("value")
                    .ok_or_else(|| TemplateError::InvalidTemplate {
                        path: path.clone(),
                        message: format!("The template output '{name}' has no 'value'."),
                    })?;
                let vpath = child_path(&path, "value");
                (self.eval_value(raw, &vpath, Site::Body)?, vpath)
            };
            if !kind.accepts(&value) {
                return Err(TemplateError::InvalidTemplate {
                    path: vpath,
                    message: format!(
                        "The template output '{name}' is not valid: the value is of type '{}' but the output is declared as '{}'.",
                        jtoken_type(&value),
                        kind.arm_name()
                    ),
                });
            }
            let mut entry = Map::new();
            entry.insert(
                "type".to_string(),
                Value::String(kind.arm_name().to_string()),
            );
            if !kind.is_secure() {
                entry.insert("value".to_string(), value);
            }
            outputs.insert(name.clone(), Value::Object(entry));
        }
        Ok(outputs)
    }

    /// Evaluates every expression inside a JSON value.
    fn eval_value(
        &mut self,
        value: &Value,
        path: &str,
        site: Site,
    ) -> Result<Value, TemplateError> {
        match value {
            Value::String(s) => self.eval_string(s, path, site),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.eval_value(v, &index_path(path, i), site))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let kpath = child_path(path, k);
                    if k.eq_ignore_ascii_case("copy") && v.is_array() {
                        // Property iteration: each `{name, count, input}` element becomes the
                        // array property `name`.
                        for (i, spec) in v.as_array().into_iter().flatten().enumerate() {
                            let spec_path = index_path(&kpath, i);
                            let name = copy_spec_name(spec, &spec_path)?.to_string();
                            let items = self.expand_copy(spec, &spec_path, site, true)?;
                            if out.insert(name.clone(), Value::Array(items)).is_some() {
                                return Err(TemplateError::InvalidTemplate {
                                    path: spec_path,
                                    message: format!("The property name '{name}' occurs more than once after evaluation."),
                                });
                            }
                        }
                        continue;
                    }
                    // Keys may be expressions too: templates attach identities with
                    // `"userAssignedIdentities": {"[resourceId(...)]": {}}`.
                    let key = match self.eval_string(k, &kpath, site)? {
                        Value::String(key) => key,
                        other => {
                            return Err(TemplateError::Expression {
                                path: kpath,
                                message: format!(
                                    "A property name expression must evaluate to a string, not a value of type '{}'.",
                                    jtoken_type(&other)
                                ),
                            })
                        }
                    };
                    let value = self.eval_value(v, &kpath, site)?;
                    if out.insert(key.clone(), value).is_some() {
                        return Err(TemplateError::InvalidTemplate {
                            path: kpath,
                            message: format!(
                                "The property name '{key}' occurs more than once after evaluation."
                            ),
                        });
                    }
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn eval_string(&mut self, s: &str, path: &str, site: Site) -> Result<Value, TemplateError> {
        if !(s.starts_with('[') && s.ends_with(']')) || s.len() < 2 {
            return Ok(Value::String(s.to_string()));
        }
        if s.starts_with("[[") {
            return Ok(Value::String(s[1..].to_string()));
        }
        let source = &s[1..s.len() - 1];
        let expr = Parser::new(source)
            .parse()
            .map_err(|message| TemplateError::Expression {
                path: path.to_string(),
                message,
            })?;
        self.eval_expr(&expr, path, site)
    }

    fn eval_expr(&mut self, expr: &Expr, path: &str, site: Site) -> Result<Value, TemplateError> {
        match expr {
            Expr::Str(s) => Ok(Value::String(s.clone())),
            Expr::Int(i) => Ok(Value::from(*i)),
            Expr::Property(target, name) => {
                let target = self.eval_expr(target, path, site)?;
                property(&target, name).map_err(|message| expr_error(path, message))
            }
            Expr::Index(target, index) => {
                let target = self.eval_expr(target, path, site)?;
                let index = self.eval_expr(index, path, site)?;
                match (&target, &index) {
                    (Value::Array(items), Value::Number(n)) => {
                        let i = n.as_i64().unwrap_or(-1);
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| items.get(i))
                            .cloned()
                            .ok_or_else(|| {
                                expr_error(
                                    path,
                                    format!("The language expression property array index '{i}' is out of bounds."),
                                )
                            })
                    }
                    (Value::Object(_), Value::String(name)) => {
                        property(&target, name).map_err(|message| expr_error(path, message))
                    }
                    _ => Err(expr_error(
                        path,
                        format!(
                            "The language expression cannot index a value of type '{}' with a value of type '{}'.",
                            jtoken_type(&target),
                            jtoken_type(&index)
                        ),
                    )),
                }
            }
            Expr::Call { name, args } => self.call(name, args, path, site),
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Expr],
        path: &str,
        site: Site,
    ) -> Result<Value, TemplateError> {
        let lname = name.to_lowercase();
        // `if` evaluates only the branch it takes, so the other may be invalid (ARM relies on
        // this for patterns like `if(empty(x), '', x[0])`).
        if lname == "if" {
            if args.len() != 3 {
                return Err(arg_count(path, name, "must have exactly three parameters"));
            }
            return match self.eval_expr(&args[0], path, site)? {
                Value::Bool(true) => self.eval_expr(&args[1], path, site),
                Value::Bool(false) => self.eval_expr(&args[2], path, site),
                other => Err(wrong_type(path, name, "Boolean", &other)),
            };
        }
        let values = args
            .iter()
            .map(|a| self.eval_expr(a, path, site))
            .collect::<Result<Vec<_>, _>>()?;
        let f = Call {
            name,
            path,
            args: &values,
        };
        match lname.as_str() {
            "parameters" => {
                let n = f.one_string()?;
                self.parameter(&n, path)
            }
            "variables" => {
                if site == Site::ParameterDefault {
                    return Err(expr_error(
                        path,
                        "The template function 'variables' is not expected at this location."
                            .to_string(),
                    ));
                }
                let n = f.one_string()?;
                self.variable(&n, path)
            }
            "newguid" => {
                if site != Site::ParameterDefault {
                    return Err(expr_error(
                        path,
                        "The template function 'newGuid' is not expected at this location. It can only be used in the default value of a parameter.".to_string(),
                    ));
                }
                f.count(0, 0)?;
                Ok(Value::String(Uuid::new_v4().to_string()))
            }
            "resourcegroup" => {
                f.count(0, 0)?;
                Ok(serde_json::json!({
                    "id": self.ctx.resource_group_id(),
                    "name": self.ctx.resource_group,
                    "type": "Microsoft.Resources/resourceGroups",
                    "location": self.ctx.location,
                    "properties": {"provisioningState": "Succeeded"}
                }))
            }
            "subscription" => {
                f.count(0, 0)?;
                Ok(serde_json::json!({
                    "id": format!("/subscriptions/{}", self.ctx.subscription_id),
                    "subscriptionId": self.ctx.subscription_id,
                    "tenantId": self.ctx.tenant_id
                }))
            }
            "tenant" => {
                f.count(0, 0)?;
                Ok(serde_json::json!({"tenantId": self.ctx.tenant_id}))
            }
            "deployment" => {
                f.count(0, 0)?;
                let content_version = self
                    .template
                    .get("contentVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                Ok(serde_json::json!({
                    "name": self.ctx.deployment_name,
                    "properties": {"template": {"contentVersion": content_version}}
                }))
            }
            "copyindex" => self.copy_index(&f),
            "resourceid" => f.resource_id(self.ctx, IdScope::ResourceGroup),
            "subscriptionresourceid" => f.resource_id(self.ctx, IdScope::Subscription),
            "tenantresourceid" => f.resource_id(self.ctx, IdScope::Tenant),
            "extensionresourceid" => f.resource_id(self.ctx, IdScope::Extension),
            _ => f.pure(&lname),
        }
    }
}

/// `/subscriptions/{s}/resourceGroups/{rg}/providers/{ns}/{type1}/{name1}/…`, or `None` when
/// the type and name segment counts do not line up.
fn resource_id_in_group(ctx: &DeploymentContext, type_: &str, name: &str) -> Option<String> {
    let mut types = type_.split('/');
    let namespace = types.next().filter(|n| !n.is_empty())?;
    let types: Vec<&str> = types.collect();
    let names: Vec<&str> = name.split('/').collect();
    if types.is_empty() || types.len() != names.len() || names.iter().any(|n| n.is_empty()) {
        return None;
    }
    let mut id = format!("{}/providers/{namespace}", ctx.resource_group_id());
    for (t, n) in types.iter().zip(&names) {
        id.push('/');
        id.push_str(t);
        id.push('/');
        id.push_str(n);
    }
    Some(id)
}

/// Resolves every `dependsOn` entry (a resource id, `type/name`, a bare name, or the name of
/// a resource copy loop, compared case-insensitively) to resources of this template and orders
/// the resources so that each comes after its dependencies, keeping template order where
/// `dependsOn` allows.
fn order_by_dependencies(
    mut resources: Vec<EvaluatedResource>,
    tolerate_unresolved: bool,
    copy_loops: &HashMap<String, Vec<String>>,
) -> Result<Vec<EvaluatedResource>, TemplateError> {
    let n = resources.len();
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        let mut kept = Vec::new();
        for d in &resources[i].depends_on {
            let members = copy_loops.get(&d.to_lowercase());
            let targets: Vec<usize> = (0..n)
                .filter(|&j| {
                    let r = &resources[j];
                    d.eq_ignore_ascii_case(&r.id)
                        || d.eq_ignore_ascii_case(&r.name)
                        || d.eq_ignore_ascii_case(&format!("{}/{}", r.type_, r.name))
                        || members.is_some_and(|ids| ids.contains(&r.id))
                })
                .collect();
            if targets.is_empty() && members.is_some() {
                // A loop with no (deployed) instances: nothing to wait for.
                continue;
            }
            if targets.is_empty() {
                if tolerate_unresolved {
                    // Most likely a resource whose condition was false: ARM drops such edges.
                    continue;
                }
                return Err(TemplateError::InvalidTemplate {
                    path: "resources".to_string(),
                    message: format!(
                        "The resource '{d}' is not defined in the template. Please see https://aka.ms/arm-syntax for usage details."
                    ),
                });
            }
            deps[i].extend(targets);
            kept.push(d.clone());
        }
        resources[i].depends_on = kept;
    }
    // Kahn's algorithm, always taking the earliest ready resource so the order is stable.
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d] && d != i));
        let Some(i) = next else {
            let stuck = (0..n)
                .find(|&i| !placed[i])
                .map(|i| resources[i].id.clone())
                .unwrap_or_default();
            return Err(TemplateError::InvalidTemplate {
                path: "resources".to_string(),
                message: format!(
                    "Circular dependency detected on resource: '{stuck}'. Please see https://aka.ms/arm-syntax-resources for usage details."
                ),
            });
        };
        placed[i] = true;
        order.push(i);
    }
    let mut slots: Vec<Option<EvaluatedResource>> = resources.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

fn expr_error(path: &str, message: String) -> TemplateError {
    TemplateError::Expression {
        path: path.to_string(),
        message,
    }
}

fn arg_count(path: &str, function: &str, rule: &str) -> TemplateError {
    expr_error(
        path,
        format!("The template language function '{function}' {rule}."),
    )
}

fn wrong_type(path: &str, function: &str, expected: &str, actual: &Value) -> TemplateError {
    expr_error(
        path,
        format!(
            "The template language function '{function}' expects its parameter to be of type '{expected}'. The provided value is of type '{}'.",
            jtoken_type(actual)
        ),
    )
}

/// `.name` on an object, matching ARM: exact key first, then case-insensitively.
fn property(target: &Value, name: &str) -> Result<Value, String> {
    match target {
        Value::Object(map) => map
            .get(name)
            .or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "The language expression property '{name}' doesn't exist, available properties are '{}'.",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }),
        other => Err(format!(
            "The language expression property '{name}' can't be evaluated, property name must be applied to an object, not a value of type '{}'.",
            jtoken_type(other)
        )),
    }
}

/// ARM's names for JSON value types, as used in its messages.
fn jtoken_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "Null",
        Value::Bool(_) => "Boolean",
        Value::Number(n) if n.is_f64() => "Float",
        Value::Number(_) => "Integer",
        Value::String(_) => "String",
        Value::Array(_) => "Array",
        Value::Object(_) => "Object",
    }
}

fn type_name(v: &Value) -> String {
    format!("a value of type '{}'", jtoken_type(v))
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

fn supplied_parameters(parameters: &Value) -> Result<&Map<String, Value>, TemplateError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match parameters {
        Value::Null => Ok(EMPTY.get_or_init(Map::new)),
        Value::Object(map) => {
            // A whole parameters file: unwrap its `parameters`.
            let is_file = map.contains_key("$schema") || map.contains_key("contentVersion");
            match (is_file, map.get("parameters")) {
                (true, Some(Value::Object(inner))) => Ok(inner),
                (true, None) => Ok(EMPTY.get_or_init(Map::new)),
                _ => Ok(map),
            }
        }
        _ => Err(TemplateError::InvalidTemplate {
            path: String::new(),
            message: "The deployment parameters must be a JSON object of the form {\"name\": {\"value\": …}}.".to_string(),
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamType {
    String,
    SecureString,
    Int,
    Bool,
    Object,
    SecureObject,
    Array,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "string" => ParamType::String,
            "securestring" => ParamType::SecureString,
            "int" => ParamType::Int,
            "bool" => ParamType::Bool,
            "object" => ParamType::Object,
            "secureobject" => ParamType::SecureObject,
            "array" => ParamType::Array,
            _ => return None,
        })
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            ParamType::String | ParamType::SecureString => v.is_string(),
            ParamType::Int => v.as_i64().is_some(),
            ParamType::Bool => v.is_boolean(),
            ParamType::Object | ParamType::SecureObject => v.is_object(),
            ParamType::Array => v.is_array(),
        }
    }

    /// The JToken type ARM names in type errors.
    fn expected_jtoken(self) -> &'static str {
        match self {
            ParamType::String | ParamType::SecureString => "String",
            ParamType::Int => "Integer",
            ParamType::Bool => "Boolean",
            ParamType::Object | ParamType::SecureObject => "Object",
            ParamType::Array => "Array",
        }
    }

    /// The capitalised type name ARM reports for outputs.
    fn arm_name(self) -> &'static str {
        match self {
            ParamType::String => "String",
            ParamType::SecureString => "SecureString",
            ParamType::Int => "Int",
            ParamType::Bool => "Bool",
            ParamType::Object => "Object",
            ParamType::SecureObject => "SecureObject",
            ParamType::Array => "Array",
        }
    }

    fn is_secure(self) -> bool {
        matches!(self, ParamType::SecureString | ParamType::SecureObject)
    }
}

/// Checks a parameter value against its declaration. Messages describe the rule, never the
/// value, so secure parameters stay secret.
fn check_parameter(
    name: &str,
    path: &str,
    decl: &Map<String, Value>,
    value: &Value,
) -> Result<(), TemplateError> {
    let invalid = |reason: String| TemplateError::InvalidParameterValue {
        name: name.to_string(),
        path: path.to_string(),
        reason,
    };
    let declared = decl.get("type").and_then(Value::as_str).unwrap_or("");
    let kind = ParamType::parse(declared).ok_or_else(|| TemplateError::InvalidTemplate {
        path: child_path(path, "type"),
        message: format!(
            "The template parameter '{name}' has type '{declared}'; expected one of 'string', 'securestring', 'int', 'bool', 'object', 'secureObject', 'array'."
        ),
    })?;
    if !kind.accepts(value) {
        return Err(invalid(format!(
            "Template parameter JToken type is not valid. Expected '{}'. Actual '{}'.",
            kind.expected_jtoken(),
            jtoken_type(value)
        )));
    }
    if let Some(allowed) = decl.get("allowedValues") {
        let allowed = allowed
            .as_array()
            .ok_or_else(|| TemplateError::InvalidTemplate {
                path: child_path(path, "allowedValues"),
                message: format!(
                    "The 'allowedValues' of template parameter '{name}' must be an array."
                ),
            })?;
        // For arrays ARM checks every element; otherwise the value itself.
        let ok = match value {
            Value::Array(items) => items.iter().all(|item| allowed.contains(item)),
            other => allowed.contains(other),
        };
        if !ok {
            let list = allowed
                .iter()
                .map(display_value)
                .collect::<Vec<_>>()
                .join(",");
            return Err(invalid(format!(
                "The parameter value is not part of the allowed value(s): '{list}'."
            )));
        }
    }
    let length = match value {
        Value::String(s) => Some(s.chars().count() as i64),
        Value::Array(a) => Some(a.len() as i64),
        _ => None,
    };
    if let Some(len) = length {
        if let Some(min) = decl.get("minLength").and_then(Value::as_i64) {
            if len < min {
                return Err(invalid(format!(
                    "Length of the value should be greater than or equal to '{min}'."
                )));
            }
        }
        if let Some(max) = decl.get("maxLength").and_then(Value::as_i64) {
            if len > max {
                return Err(invalid(format!(
                    "Length of the value should be less than or equal to '{max}'."
                )));
            }
        }
    }
    if let Some(n) = value.as_i64() {
        if let Some(min) = decl.get("minValue").and_then(Value::as_i64) {
            if n < min {
                return Err(invalid(format!(
                    "The value should be greater than or equal to '{min}'."
                )));
            }
        }
        if let Some(max) = decl.get("maxValue").and_then(Value::as_i64) {
            if n > max {
                return Err(invalid(format!(
                    "The value should be less than or equal to '{max}'."
                )));
            }
        }
    }
    Ok(())
}

/// Renders a value the way ARM's `string()` does: strings bare, booleans as `True`/`False`
/// (.NET's spelling), null as empty, objects and arrays as compact JSON.
fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Null => String::new(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Expression parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Str(String),
    Int(i64),
    Call { name: String, args: Vec<Expr> },
    Property(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Str(String),
    Int(i64),
    Ident(String),
    End,
}

impl Token {
    /// ARM's token names, used in its parse errors.
    fn arm_name(&self) -> &'static str {
        match self {
            Token::LParen => "LeftParenthesis",
            Token::RParen => "RightParenthesis",
            Token::LBracket => "LeftSquareBracket",
            Token::RBracket => "RightSquareBracket",
            Token::Comma => "Comma",
            Token::Dot => "Dot",
            Token::Str(_) => "String",
            Token::Int(_) => "Integer",
            Token::Ident(_) => "Identifier",
            Token::End => "EndOfData",
        }
    }
}

/// ARM's limit on the `count` of a copy loop.
const MAX_COPY_COUNT: i64 = 800;

/// The `name` of a copy element, required for resource, property and variable iteration.
fn copy_spec_name<'v>(spec: &'v Value, path: &str) -> Result<&'v str, TemplateError> {
    let obj = spec
        .as_object()
        .ok_or_else(|| TemplateError::InvalidTemplate {
            path: path.to_string(),
            message: "A 'copy' element must be an object with 'name' and 'count'.".to_string(),
        })?;
    match obj.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Ok(n),
        _ => Err(TemplateError::InvalidTemplate {
            path: path.to_string(),
            message: "A 'copy' element needs a non-empty string 'name'.".to_string(),
        }),
    }
}

/// Upper bound on strings and arrays a single function may generate (`padLeft`, `range`).
const MAX_GENERATED_LEN: i64 = 10_000;

/// Nesting limit for expressions; deeper input is refused instead of overflowing the stack.
const MAX_EXPRESSION_DEPTH: usize = 64;

struct Parser<'s> {
    source: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(source: &'s str) -> Self {
        Parser {
            source,
            tokens: Vec::new(),
            pos: 0,
            depth: 0,
        }
    }

    fn parse(mut self) -> Result<Expr, String> {
        self.tokens = tokenize(self.source).map_err(|detail| {
            format!(
                "Unable to parse language expression '{}': {detail}",
                self.source
            )
        })?;
        if self.tokens == [Token::End] {
            return Err(format!(
                "The language expression '{}' is empty; an expression needs a function call, e.g. [parameters('name')].",
                self.source
            ));
        }
        let expr = self.expr()?;
        self.expect(&Token::End)?;
        Ok(expr)
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> String {
        format!(
            "Unable to parse language expression '{}': expected token '{expected}' and actual '{}'.",
            self.source,
            self.peek().arm_name()
        )
    }

    fn expect(&mut self, token: &Token) -> Result<(), String> {
        if self.peek() == token {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(token.arm_name()))
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_EXPRESSION_DEPTH {
            return Err(format!(
                "The language expression '{}' nests deeper than {MAX_EXPRESSION_DEPTH} levels.",
                self.source
            ));
        }
        let result = self.postfix();
        self.depth -= 1;
        result
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut expr = self.primary()?;
        loop {
            match self.peek() {
                Token::Dot => {
                    self.next();
                    match self.next() {
                        Token::Ident(name) => expr = Expr::Property(Box::new(expr), name),
                        _ => {
                            self.pos -= 1;
                            return Err(self.unexpected("Identifier"));
                        }
                    }
                }
                Token::LBracket => {
                    self.next();
                    let index = self.expr()?;
                    self.expect(&Token::RBracket)?;
                    expr = Expr::Index(Box::new(expr), Box::new(index));
                }
                _ => return Ok(expr),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.next() {
            Token::Str(s) => Ok(Expr::Str(s)),
            Token::Int(i) => Ok(Expr::Int(i)),
            Token::Ident(mut name) => {
                // `namespace.member(...)` is a user-defined function call.
                if self.peek() == &Token::Dot
                    && matches!(self.tokens.get(self.pos + 1), Some(Token::Ident(_)))
                    && self.tokens.get(self.pos + 2) == Some(&Token::LParen)
                {
                    self.next();
                    if let Token::Ident(member) = self.next() {
                        name = format!("{name}.{member}");
                    }
                }
                if self.peek() != &Token::LParen {
                    return Err(format!(
                        "Unable to parse language expression '{}': the identifier '{name}' must be a function call such as '{name}()'; string literals need single quotes.",
                        self.source
                    ));
                }
                self.next();
                let mut args = Vec::new();
                if self.peek() != &Token::RParen {
                    loop {
                        args.push(self.expr()?);
                        match self.peek() {
                            Token::Comma => {
                                self.next();
                            }
                            Token::RParen => break,
                            _ => return Err(self.unexpected("RightParenthesis")),
                        }
                    }
                }
                self.expect(&Token::RParen)?;
                Ok(Expr::Call { name, args })
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.unexpected("Identifier"))
            }
        }
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' | ',' | '.' => {
                tokens.push(match c {
                    '(' => Token::LParen,
                    ')' => Token::RParen,
                    '[' => Token::LBracket,
                    ']' => Token::RBracket,
                    ',' => Token::Comma,
                    _ => Token::Dot,
                });
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err("the string literal is not terminated (a quote is missing; write '' for a literal quote).".to_string())
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Str(s));
            }
            '-' | '0'..='9' => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse::<i64>().map_err(|_| {
                    format!("the number '{text}' at position '{start}' is not a valid integer.")
                })?;
                tokens.push(Token::Int(n));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(format!(
                    "the string character '{other}' at position '{i}' is not expected."
                ))
            }
        }
    }
    tokens.push(Token::End);
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------------------------

/// ARM functions the emulator knows of but does not implement; anything else unknown is
/// reported as not a valid ARM function at all.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "reference",
    "references",
    "list",
    "listkeys",
    "listsecrets",
    "listaccountsas",
    "listservicesas",
    "listcallbackurl",
    "providers",
    "pickzones",
    "managementgroup",
    "managementgroupresourceid",
    "utcnow",
    "datetimeadd",
    "datetimefromepoch",
    "datetimetoepoch",
    "items",
    "filter",
    "map",
    "mapvalues",
    "reduce",
    "sort",
    "groupby",
    "toobject",
    "flatten",
    "intersection",
    "objectkeys",
    "shallowmerge",
    "tryget",
    "indexfromend",
    "float",
    "uri",
    "uricomponent",
    "uricomponenttostring",
    "datauri",
    "datauritostring",
    "base64tojson",
    "parsecidr",
    "cidrsubnet",
    "cidrhost",
    "lambda",
    "lambdavariables",
];

#[derive(Clone, Copy)]
enum IdScope {
    ResourceGroup,
    Subscription,
    Tenant,
    Extension,
}

/// A call of a side-effect-free function with its evaluated arguments.
struct Call<'c> {
    name: &'c str,
    path: &'c str,
    args: &'c [Value],
}

impl Call<'_> {
    fn err(&self, message: String) -> TemplateError {
        expr_error(self.path, message)
    }

    fn count(&self, min: usize, max: usize) -> Result<(), TemplateError> {
        let n = self.args.len();
        if n >= min && n <= max {
            return Ok(());
        }
        let rule = match (min, max) {
            (0, 0) => "must not have any parameters".to_string(),
            (1, 1) => "must have only one parameter".to_string(),
            (a, b) if a == b => format!("must have exactly {a} parameters"),
            (1, usize::MAX) => "must have at least one parameter".to_string(),
            (a, usize::MAX) => format!("must have at least {a} parameters"),
            (a, b) => format!("must have between {a} and {b} parameters"),
        };
        Err(arg_count(self.path, self.name, &rule))
    }

    fn string_at(&self, i: usize) -> Result<String, TemplateError> {
        match &self.args[i] {
            Value::String(s) => Ok(s.clone()),
            other => Err(wrong_type(self.path, self.name, "String", other)),
        }
    }

    fn int_at(&self, i: usize) -> Result<i64, TemplateError> {
        self.args[i]
            .as_i64()
            .ok_or_else(|| wrong_type(self.path, self.name, "Integer", &self.args[i]))
    }

    fn bool_at(&self, i: usize) -> Result<bool, TemplateError> {
        self.args[i]
            .as_bool()
            .ok_or_else(|| wrong_type(self.path, self.name, "Boolean", &self.args[i]))
    }

    fn one_string(&self) -> Result<String, TemplateError> {
        self.count(1, 1)?;
        self.string_at(0)
    }

    fn all_strings(&self) -> Result<Vec<String>, TemplateError> {
        (0..self.args.len()).map(|i| self.string_at(i)).collect()
    }

    fn resource_id(&self, ctx: &DeploymentContext, scope: IdScope) -> Result<Value, TemplateError> {
        let args = self.all_strings()?;
        // The extension form's first argument is itself a resource id, full of slashes.
        let skip = usize::from(matches!(scope, IdScope::Extension));
        let Some(type_at) = args
            .iter()
            .skip(skip)
            .position(|a| a.contains('/'))
            .map(|i| i + skip)
        else {
            return Err(self.err(format!(
                "Unable to evaluate template language function '{}': no argument is a resource type of the form 'Namespace/type'.",
                self.name
            )));
        };
        let type_ = &args[type_at];
        let lead = &args[..type_at];
        let prefix = match (scope, lead.len()) {
            (IdScope::ResourceGroup, 0) => ctx.resource_group_id(),
            (IdScope::ResourceGroup, 1) => {
                format!("/subscriptions/{}/resourceGroups/{}", ctx.subscription_id, lead[0])
            }
            (IdScope::ResourceGroup, 2) => {
                format!("/subscriptions/{}/resourceGroups/{}", lead[0], lead[1])
            }
            (IdScope::Subscription, 0) => format!("/subscriptions/{}", ctx.subscription_id),
            (IdScope::Subscription, 1) => format!("/subscriptions/{}", lead[0]),
            (IdScope::Tenant, 0) => String::new(),
            (IdScope::Extension, 1) => lead[0].trim_end_matches('/').to_string(),
            _ => {
                return Err(self.err(format!(
                    "Unable to evaluate template language function '{}': too many arguments before the resource type '{type_}'.",
                    self.name
                )))
            }
        };
        let mut type_segments = type_.split('/').filter(|s| !s.is_empty());
        let namespace = type_segments.next().unwrap_or_default();
        let types: Vec<&str> = type_segments.collect();
        let names: Vec<&str> = args[type_at + 1..]
            .iter()
            .flat_map(|n| n.split('/'))
            .filter(|s| !s.is_empty())
            .collect();
        if types.is_empty() || names.len() != types.len() {
            return Err(self.err(format!(
                "Unable to evaluate template language function '{}': the type '{type_}' requires '{}' resource name argument(s), but '{}' were given.",
                self.name,
                types.len().max(1),
                names.len()
            )));
        }
        let mut id = format!("{prefix}/providers/{namespace}");
        for (t, n) in types.iter().zip(names.iter()) {
            id.push('/');
            id.push_str(t);
            id.push('/');
            id.push_str(n);
        }
        Ok(Value::String(id))
    }

    /// Functions that depend only on their arguments.
    fn pure(&self, lname: &str) -> Result<Value, TemplateError> {
        let a = self.args;
        match lname {
            "uniquestring" => {
                self.count(1, usize::MAX)?;
                let parts = self.all_strings()?;
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                Ok(Value::String(unique_string(&refs)))
            }
            "guid" => {
                self.count(1, usize::MAX)?;
                let parts = self.all_strings()?;
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                Ok(Value::String(arm_guid(&refs).to_string()))
            }
            "concat" => {
                self.count(1, usize::MAX)?;
                if a.iter().all(|v| v.is_array() || v.is_null()) && a.iter().any(Value::is_array) {
                    let mut out = Vec::new();
                    for v in a {
                        if let Value::Array(items) = v {
                            out.extend(items.iter().cloned());
                        }
                    }
                    return Ok(Value::Array(out));
                }
                let mut s = String::new();
                for v in a {
                    match v {
                        Value::Array(_) | Value::Object(_) => {
                            return Err(self.err(format!(
                                "The template language function 'concat' expects either all arrays or all strings, integers and booleans; got a value of type '{}' among them.",
                                jtoken_type(v)
                            )))
                        }
                        other => s.push_str(&display_value(other)),
                    }
                }
                Ok(Value::String(s))
            }
            "format" => {
                self.count(1, usize::MAX)?;
                let fmt = self.string_at(0)?;
                format_dotnet(&fmt, &a[1..])
                    .map(Value::String)
                    .map_err(|m| self.err(m))
            }
            "tolower" => Ok(Value::String(self.one_string()?.to_lowercase())),
            "toupper" => Ok(Value::String(self.one_string()?.to_uppercase())),
            "trim" => Ok(Value::String(self.one_string()?.trim().to_string())),
            "string" => {
                self.count(1, 1)?;
                Ok(Value::String(display_value(&a[0])))
            }
            "int" => {
                self.count(1, 1)?;
                match &a[0] {
                    Value::Number(n) if n.as_i64().is_some() => Ok(a[0].clone()),
                    Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| {
                        self.err("The template language function 'int' could not convert the provided string to an integer.".to_string())
                    }),
                    other => Err(wrong_type(self.path, self.name, "String or Integer", other)),
                }
            }
            "bool" => {
                self.count(1, 1)?;
                match &a[0] {
                    Value::Bool(_) => Ok(a[0].clone()),
                    Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
                    Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
                    Value::Number(n) if n.as_i64().is_some() => Ok(Value::Bool(n.as_i64() != Some(0))),
                    _ => Err(self.err(
                        "The template language function 'bool' expects 'true', 'false', 0, 1 or a boolean.".to_string(),
                    )),
                }
            }
            "json" => {
                let s = self.one_string()?;
                serde_json::from_str(&s).map_err(|e| {
                    self.err(format!("The template language function 'json' could not parse its argument as JSON: {e}."))
                })
            }
            "true" => self.count(0, 0).map(|_| Value::Bool(true)),
            "false" => self.count(0, 0).map(|_| Value::Bool(false)),
            "null" => self.count(0, 0).map(|_| Value::Null),
            "not" => {
                self.count(1, 1)?;
                Ok(Value::Bool(!self.bool_at(0)?))
            }
            "and" | "or" => {
                self.count(2, usize::MAX)?;
                let bools = (0..a.len())
                    .map(|i| self.bool_at(i))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::Bool(if lname == "and" {
                    bools.iter().all(|b| *b)
                } else {
                    bools.iter().any(|b| *b)
                }))
            }
            "equals" => {
                self.count(2, 2)?;
                Ok(Value::Bool(json_equal(&a[0], &a[1])))
            }
            "less" | "lessorequals" | "greater" | "greaterorequals" => {
                self.count(2, 2)?;
                let ord = match (&a[0], &a[1]) {
                    (Value::Number(x), Value::Number(y)) => x
                        .as_f64()
                        .zip(y.as_f64())
                        .and_then(|(x, y)| x.partial_cmp(&y)),
                    (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                    _ => None,
                }
                .ok_or_else(|| {
                    self.err(format!(
                        "The template language function '{}' expects two integers or two strings.",
                        self.name
                    ))
                })?;
                use std::cmp::Ordering::*;
                Ok(Value::Bool(match lname {
                    "less" => ord == Less,
                    "lessorequals" => ord != Greater,
                    "greater" => ord == Greater,
                    _ => ord != Less,
                }))
            }
            "empty" => {
                self.count(1, 1)?;
                Ok(Value::Bool(match &a[0] {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Array(x) => x.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    other => {
                        return Err(wrong_type(
                            self.path,
                            self.name,
                            "String, Array or Object",
                            other,
                        ))
                    }
                }))
            }
            "length" => {
                self.count(1, 1)?;
                Ok(Value::from(match &a[0] {
                    Value::String(s) => s.chars().count(),
                    Value::Array(x) => x.len(),
                    Value::Object(o) => o.len(),
                    other => {
                        return Err(wrong_type(
                            self.path,
                            self.name,
                            "String, Array or Object",
                            other,
                        ))
                    }
                }))
            }
            "replace" => {
                self.count(3, 3)?;
                let (s, old, new) = (self.string_at(0)?, self.string_at(1)?, self.string_at(2)?);
                if old.is_empty() {
                    return Err(self.err(
                        "The template language function 'replace' cannot replace an empty string."
                            .to_string(),
                    ));
                }
                Ok(Value::String(s.replace(&old, &new)))
            }
            "substring" => {
                self.count(2, 3)?;
                let s: Vec<char> = self.string_at(0)?.chars().collect();
                let start = self.int_at(1)?;
                let len = if a.len() == 3 {
                    self.int_at(2)?
                } else {
                    s.len() as i64 - start
                };
                let end = start.checked_add(len).unwrap_or(i64::MAX);
                if start < 0 || len < 0 || end > s.len() as i64 {
                    return Err(self.err(
                        "The index and length parameters must refer to a location within the string.".to_string(),
                    ));
                }
                Ok(Value::String(
                    s[start as usize..end as usize].iter().collect(),
                ))
            }
            "take" | "skip" => {
                self.count(2, 2)?;
                let n = self.int_at(1)?.max(0) as usize;
                match &a[0] {
                    Value::String(s) => {
                        let chars = s.chars();
                        Ok(Value::String(if lname == "take" {
                            chars.take(n).collect()
                        } else {
                            chars.skip(n).collect()
                        }))
                    }
                    Value::Array(items) => Ok(Value::Array(if lname == "take" {
                        items.iter().take(n).cloned().collect()
                    } else {
                        items.iter().skip(n).cloned().collect()
                    })),
                    other => Err(wrong_type(self.path, self.name, "String or Array", other)),
                }
            }
            "contains" => {
                self.count(2, 2)?;
                Ok(Value::Bool(match (&a[0], &a[1]) {
                    (Value::String(s), needle) => s.contains(&display_value(needle)),
                    (Value::Array(items), needle) => items.iter().any(|x| json_equal(x, needle)),
                    (Value::Object(o), Value::String(k)) => {
                        o.keys().any(|x| x.eq_ignore_ascii_case(k))
                    }
                    (other, _) => {
                        return Err(wrong_type(
                            self.path,
                            self.name,
                            "String, Array or Object",
                            other,
                        ))
                    }
                }))
            }
            "startswith" | "endswith" => {
                self.count(2, 2)?;
                let (s, x) = (
                    self.string_at(0)?.to_lowercase(),
                    self.string_at(1)?.to_lowercase(),
                );
                Ok(Value::Bool(if lname == "startswith" {
                    s.starts_with(&x)
                } else {
                    s.ends_with(&x)
                }))
            }
            "indexof" | "lastindexof" => {
                self.count(2, 2)?;
                let found = match (&a[0], &a[1]) {
                    (Value::String(s), Value::String(x)) => {
                        // Case-insensitive, counted in characters.
                        let (s, x): (Vec<char>, Vec<char>) = (
                            s.to_lowercase().chars().collect(),
                            x.to_lowercase().chars().collect(),
                        );
                        let positions = (0..=s.len().saturating_sub(x.len()))
                            .filter(|&i| i + x.len() <= s.len() && s[i..i + x.len()] == x[..]);
                        if lname == "indexof" {
                            positions.min()
                        } else {
                            positions.max()
                        }
                    }
                    (Value::Array(items), needle) => {
                        let mut positions = items
                            .iter()
                            .enumerate()
                            .filter(|(_, v)| json_equal(v, needle))
                            .map(|(i, _)| i);
                        if lname == "indexof" {
                            positions.next()
                        } else {
                            positions.next_back()
                        }
                    }
                    (other, _) => {
                        return Err(wrong_type(self.path, self.name, "String or Array", other))
                    }
                };
                Ok(found.map_or(Value::from(-1), Value::from))
            }
            "split" => {
                self.count(2, 2)?;
                let s = self.string_at(0)?;
                let delims: Vec<String> = match &a[1] {
                    Value::String(d) => vec![d.clone()],
                    Value::Array(ds) => ds
                        .iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect(),
                    other => {
                        return Err(wrong_type(self.path, self.name, "String or Array", other))
                    }
                };
                Ok(Value::Array(
                    split_any(&s, &delims)
                        .into_iter()
                        .map(Value::String)
                        .collect(),
                ))
            }
            "join" => {
                self.count(2, 2)?;
                let Value::Array(items) = &a[0] else {
                    return Err(wrong_type(self.path, self.name, "Array", &a[0]));
                };
                let sep = self.string_at(1)?;
                Ok(Value::String(
                    items
                        .iter()
                        .map(display_value)
                        .collect::<Vec<_>>()
                        .join(&sep),
                ))
            }
            "first" | "last" => {
                self.count(1, 1)?;
                match &a[0] {
                    Value::String(s) => {
                        let c = if lname == "first" {
                            s.chars().next()
                        } else {
                            s.chars().last()
                        };
                        Ok(Value::String(c.map(String::from).unwrap_or_default()))
                    }
                    Value::Array(items) => {
                        let v = if lname == "first" {
                            items.first()
                        } else {
                            items.last()
                        };
                        Ok(v.cloned().unwrap_or(Value::Null))
                    }
                    other => Err(wrong_type(self.path, self.name, "String or Array", other)),
                }
            }
            "padleft" => {
                self.count(2, 3)?;
                let s = display_value(&a[0]);
                let width = self.int_at(1)?;
                // Bounded so a template cannot make the emulator allocate gigabytes.
                if !(0..=MAX_GENERATED_LEN).contains(&width) {
                    return Err(self.err(format!(
                        "The template language function 'padLeft' needs a total length between 0 and {MAX_GENERATED_LEN}."
                    )));
                }
                let width = width as usize;
                let pad = if a.len() == 3 {
                    self.string_at(2)?
                } else {
                    " ".to_string()
                };
                let mut pad_chars = pad.chars();
                let (Some(p), None) = (pad_chars.next(), pad_chars.next()) else {
                    return Err(self.err("The template language function 'padLeft' needs a single padding character.".to_string()));
                };
                let len = s.chars().count();
                Ok(Value::String(if len >= width {
                    s
                } else {
                    std::iter::repeat_n(p, width - len)
                        .chain(s.chars())
                        .collect()
                }))
            }
            "base64" => Ok(Value::String(base64_encode(self.one_string()?.as_bytes()))),
            "base64tostring" => {
                let s = self.one_string()?;
                base64_decode(&s)
                    .and_then(|b| String::from_utf8(b).ok())
                    .map(Value::String)
                    .ok_or_else(|| self.err("The template language function 'base64ToString' was given a value that is not valid base64-encoded UTF-8.".to_string()))
            }
            "createarray" => Ok(Value::Array(a.to_vec())),
            "array" => {
                self.count(1, 1)?;
                Ok(match &a[0] {
                    Value::Array(_) => a[0].clone(),
                    other => Value::Array(vec![other.clone()]),
                })
            }
            "createobject" => {
                if a.len() & 1 == 1 {
                    return Err(arg_count(
                        self.path,
                        self.name,
                        "must have an even number of parameters (key, value pairs)",
                    ));
                }
                let mut m = Map::new();
                for pair in a.chunks(2) {
                    let Value::String(k) = &pair[0] else {
                        return Err(wrong_type(self.path, self.name, "String", &pair[0]));
                    };
                    m.insert(k.clone(), pair[1].clone());
                }
                Ok(Value::Object(m))
            }
            "union" => {
                self.count(1, usize::MAX)?;
                if a.iter().all(Value::is_object) {
                    let mut out = Value::Object(Map::new());
                    for v in a {
                        deep_merge(&mut out, v);
                    }
                    Ok(out)
                } else if a.iter().all(Value::is_array) {
                    let mut out: Vec<Value> = Vec::new();
                    for v in a.iter().filter_map(Value::as_array).flatten() {
                        if !out.iter().any(|x| json_equal(x, v)) {
                            out.push(v.clone());
                        }
                    }
                    Ok(Value::Array(out))
                } else {
                    Err(self.err("The template language function 'union' expects either all objects or all arrays.".to_string()))
                }
            }
            "coalesce" => {
                self.count(1, usize::MAX)?;
                Ok(a.iter()
                    .find(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(Value::Null))
            }
            "range" => {
                self.count(2, 2)?;
                let (start, count) = (self.int_at(0)?, self.int_at(1)?);
                if !(0..=10_000).contains(&count) {
                    return Err(self.err(
                        "The template language function 'range' needs a count between 0 and 10000."
                            .to_string(),
                    ));
                }
                Ok(Value::Array(
                    (start..start.saturating_add(count))
                        .map(Value::from)
                        .collect(),
                ))
            }
            "min" | "max" => {
                self.count(1, usize::MAX)?;
                let nums: Vec<Value> = match a {
                    [Value::Array(items)] => items.clone(),
                    _ => a.to_vec(),
                };
                let ints = nums
                    .iter()
                    .map(|v| {
                        v.as_i64()
                            .ok_or_else(|| wrong_type(self.path, self.name, "Integer", v))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let r = if lname == "min" {
                    ints.iter().min()
                } else {
                    ints.iter().max()
                };
                r.map(|n| Value::from(*n)).ok_or_else(|| {
                    self.err(format!(
                        "The template language function '{}' needs at least one integer.",
                        self.name
                    ))
                })
            }
            "add" | "sub" | "mul" | "div" | "mod" => {
                self.count(2, 2)?;
                let (x, y) = (self.int_at(0)?, self.int_at(1)?);
                let r = match lname {
                    "add" => x.checked_add(y),
                    "sub" => x.checked_sub(y),
                    "mul" => x.checked_mul(y),
                    "div" => x.checked_div(y),
                    _ => x.checked_rem(y),
                };
                r.map(Value::from).ok_or_else(|| {
                    self.err(format!(
                        "The template language function '{}' failed: division by zero or integer overflow.",
                        self.name
                    ))
                })
            }
            "environment" => {
                self.count(0, 0)?;
                Ok(serde_json::json!({
                    "name": "AzureCloud",
                    "resourceManager": "https://management.azure.com/",
                    "portal": "https://portal.azure.com",
                    "authentication": {
                        "loginEndpoint": "https://login.microsoftonline.com/",
                        "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
                        "tenant": "common",
                        "identityProvider": "AAD"
                    },
                    "suffixes": {
                        "acrLoginServer": ".azurecr.io",
                        "keyvaultDns": ".vault.azure.net",
                        "sqlServerHostname": ".database.windows.net",
                        "storage": "core.windows.net"
                    }
                }))
            }
            other if other.contains('.') => Err(TemplateError::UnsupportedFeature {
                feature: format!("user-defined function '{}'", self.name),
                path: self.path.to_string(),
            }),
            other if KNOWN_UNSUPPORTED.contains(&other) || other.starts_with("list") => {
                Err(TemplateError::UnsupportedFunction {
                    function: self.name.to_string(),
                    path: self.path.to_string(),
                })
            }
            _ => Err(TemplateError::UnknownFunction {
                function: self.name.to_string(),
                path: self.path.to_string(),
            }),
        }
    }
}

/// Deep equality where `1` and `1.0` are equal, as in ARM's JToken comparison.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// `union` of objects: later keys win, nested objects merge.
fn deep_merge(into: &mut Value, from: &Value) {
    if let (Value::Object(dst), Value::Object(src)) = (&mut *into, from) {
        for (k, v) in src {
            match dst.get_mut(k) {
                Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                _ => {
                    dst.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

fn split_any(s: &str, delims: &[String]) -> Vec<String> {
    let delims: Vec<&String> = delims.iter().filter(|d| !d.is_empty()).collect();
    if delims.is_empty() {
        return vec![s.to_string()];
    }
    let mut out = Vec::new();
    let mut current = String::new();
    let mut rest = s;
    'outer: while !rest.is_empty() {
        for d in &delims {
            if let Some(after) = rest.strip_prefix(d.as_str()) {
                out.push(std::mem::take(&mut current));
                rest = after;
                continue 'outer;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            current.push(c);
        }
        rest = chars.as_str();
    }
    out.push(current);
    out
}

/// .NET composite formatting as used by ARM's `format()`: `{0}`, `{1}`, … with `{{`/`}}`
/// escapes. Alignment and format specifiers are not supported and are reported as such.
fn format_dotnet(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut spec = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => spec.push(ch),
                        None => return Err("The format string has a '{' without a matching '}'.".to_string()),
                    }
                }
                let index: usize = spec.trim().parse().map_err(|_| {
                    format!("The format item '{{{spec}}}' is not supported by this emulator; use '{{0}}', '{{1}}', ….")
                })?;
                let value = args.get(index).ok_or_else(|| {
                    format!("The format item '{{{index}}}' refers to a missing argument; only {} were given.", args.len())
                })?;
                out.push_str(&display_value(value));
            }
            '}' => return Err("The format string has a '}' without a matching '{'; write '}}' for a literal brace.".to_string()),
            other => out.push(other),
        }
    }
    Ok(out)
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> DeploymentContext {
        DeploymentContext {
            subscription_id: "00000000-0000-0000-0000-000000000000".to_string(),
            tenant_id: "72f988bf-0000-0000-0000-000000000000".to_string(),
            resource_group: "my-rg".to_string(),
            location: "westeurope".to_string(),
            deployment_name: "flow-deploy".to_string(),
        }
    }

    /// The Python ACI worker's default `arm_template` after Prefect templating dropped the
    /// unset `{{ image }}`/`{{ command }}` placeholders and filled cpu/memory.
    fn python_worker_template() -> Value {
        json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-08-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {
                "container_group_name": {
                    "defaultValue": "[uniqueString(resourceGroup().id)]",
                    "metadata": {"description": "The name of the container group to create."},
                    "type": "string"
                },
                "container_name": {
                    "defaultValue": "[uniqueString(resourceGroup().id)]",
                    "metadata": {"description": "The name of the container to create."},
                    "type": "string"
                },
                "location": {
                    "defaultValue": "[resourceGroup().location]",
                    "metadata": {"description": "Location for all resources."},
                    "type": "string"
                }
            },
            "resources": [{
                "apiVersion": "2022-09-01",
                "location": "[parameters('location')]",
                "name": "[parameters('container_group_name')]",
                "properties": {
                    "containers": [{
                        "name": "[parameters('container_name')]",
                        "properties": {
                            "image": "prefecthq/prefect:3.9.1-python3.11",
                            "command": ["/opt/prefect/entrypoint.sh", "prefect", "flow-run", "execute"],
                            "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.0}},
                            "environmentVariables": []
                        }
                    }],
                    "osType": "Linux",
                    "restartPolicy": "Never"
                },
                "type": "Microsoft.ContainerInstance/containerGroups"
            }]
        })
    }

    /// Evaluates `value` as a resource property and returns the result.
    fn eval(value: Value) -> Result<Value, TemplateError> {
        eval_with(value, json!({}), json!({}))
    }

    fn eval_with(value: Value, params_decl: Value, params: Value) -> Result<Value, TemplateError> {
        let template = json!({
            "parameters": params_decl,
            "variables": {"greeting": "hello", "list": ["a", "b"], "obj": {"Key": "v", "nested": {"n": 1}}},
            "resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "properties": {"x": value}}]
        });
        let out = evaluate(&template, &params, &ctx())?;
        Ok(out.resources[0].body["properties"]["x"].clone())
    }

    fn ok(expr: &str) -> Value {
        match eval(json!(expr)) {
            Ok(v) => v,
            Err(e) => panic!("{expr}: {e}"),
        }
    }

    fn err(expr: &str) -> TemplateError {
        match eval(json!(expr)) {
            Ok(v) => panic!("{expr} evaluated to {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn python_worker_default_template() {
        let name = format!("my-flow-{}", Uuid::new_v4());
        let params = json!({"container_group_name": {"value": name}});
        let out = evaluate(&python_worker_template(), &params, &ctx()).unwrap();
        assert_eq!(out.resources.len(), 1);
        let r = &out.resources[0];
        assert_eq!(r.type_, "Microsoft.ContainerInstance/containerGroups");
        assert_eq!(r.api_version, "2022-09-01");
        assert_eq!(r.name, name);
        assert_eq!(r.location.as_deref(), Some("westeurope"));
        assert!(r.depends_on.is_empty());
        let container_name = r.body["properties"]["containers"][0]["name"]
            .as_str()
            .unwrap();
        assert_eq!(container_name, unique_string(&[&ctx().resource_group_id()]));
        assert_eq!(container_name.len(), 13);
        assert!(container_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        // Azure's value for this resource group id.
        assert_eq!(container_name, "bmg7c6xu4tw46");
        assert_eq!(r.body["name"], json!(name));
        assert_eq!(r.body["location"], json!("westeurope"));
        assert_eq!(r.body["properties"]["osType"], json!("Linux"));
        assert_eq!(
            r.body["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"],
            json!(1.0)
        );
        assert!(out.outputs.is_empty());
        // Deterministic: same inputs, same result.
        assert_eq!(
            evaluate(&python_worker_template(), &params, &ctx()).unwrap(),
            out
        );
    }

    #[test]
    fn python_worker_template_without_parameters_uses_defaults() {
        let out = evaluate(&python_worker_template(), &Value::Null, &ctx()).unwrap();
        assert_eq!(out.resources[0].name, "bmg7c6xu4tw46");
    }

    #[test]
    fn unique_string_matches_azure() {
        assert_eq!(unique_string(&["test"]), "rbgf3xv4ufgzg");
        assert_eq!(unique_string(&["hello", "world"]), "a7wkljktk6wne");
        assert_eq!(unique_string(&["abc"]), "cgtzqvhu4i23s");
        assert_eq!(unique_string(&["foo", "bar", "baz"]), "xzi4ioaxtmth4");
        assert_eq!(
            unique_string(&[
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg"
            ]),
            "bmg7c6xu4tw46"
        );
        // Every tail length (0..8 bytes past a block) produces 13 base32 characters.
        for n in 0..20 {
            let s = unique_string(&[&"x".repeat(n)]);
            assert_eq!(s.len(), 13);
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
                "{s}"
            );
        }
        assert_ne!(unique_string(&["ABC"]), unique_string(&["abc"]));
        assert_eq!(
            ok("[uniqueString('hello', 'world')]"),
            json!("a7wkljktk6wne")
        );
        assert_eq!(
            ok("[uniqueString(resourceGroup().id)]"),
            json!("bmg7c6xu4tw46")
        );
    }

    #[test]
    fn guid_is_v5_under_the_arm_namespace() {
        let ns = Uuid::parse_str("11fb06fb-712d-4ddd-98c7-e71bbd588830").unwrap();
        let g = ok("[guid('a', 'b')]");
        assert_eq!(g, json!(Uuid::new_v5(&ns, b"a-b").to_string()));
        assert_eq!(arm_guid(&["a", "b"]).get_version_num(), 5);
        assert_eq!(ok("[guid('a', 'b')]"), g);
        assert_ne!(ok("[guid('a', 'c')]"), g);
        assert!(matches!(err("[guid()]"), TemplateError::Expression { .. }));
        assert!(matches!(err("[guid(1)]"), TemplateError::Expression { .. }));
    }

    #[test]
    fn context_functions() {
        let c = ctx();
        assert_eq!(ok("[resourceGroup().id]"), json!(c.resource_group_id()));
        assert_eq!(ok("[resourceGroup().name]"), json!("my-rg"));
        assert_eq!(ok("[resourceGroup().location]"), json!("westeurope"));
        assert_eq!(ok("[ResourceGroup().Location]"), json!("westeurope"));
        assert_eq!(
            ok("[subscription().id]"),
            json!("/subscriptions/00000000-0000-0000-0000-000000000000")
        );
        assert_eq!(
            ok("[subscription().subscriptionId]"),
            json!(c.subscription_id)
        );
        assert_eq!(ok("[subscription().tenantId]"), json!(c.tenant_id));
        assert_eq!(ok("[tenant().tenantId]"), json!(c.tenant_id));
        assert_eq!(ok("[deployment().name]"), json!("flow-deploy"));
        assert_eq!(ok("[environment().name]"), json!("AzureCloud"));
        assert_eq!(
            ok("[environment().suffixes.acrLoginServer]"),
            json!(".azurecr.io")
        );
    }

    #[test]
    fn literals_and_escapes() {
        assert_eq!(ok("plain"), json!("plain"));
        assert_eq!(ok("[[literal]"), json!("[literal]"));
        assert_eq!(ok("[[concat('a')]"), json!("[concat('a')]"));
        assert_eq!(ok("[not closed"), json!("[not closed"));
        assert_eq!(ok("not opened]"), json!("not opened]"));
        assert_eq!(ok("['it''s']"), json!("it's"));
        assert_eq!(ok("[concat('a', '''', 'b')]"), json!("a'b"));
        assert_eq!(ok("[ concat( 'a' , 'b' ) ]"), json!("ab"));
        assert_eq!(ok("[add(-2, 5)]"), json!(3));
        assert_eq!(ok("[true()]"), json!(true));
        assert_eq!(ok("[false()]"), json!(false));
        assert_eq!(ok("[null()]"), json!(null));
        assert_eq!(eval(json!(42)).unwrap(), json!(42));
        assert_eq!(
            eval(json!({"a": ["[toUpper('x')]"]})).unwrap(),
            json!({"a": ["X"]})
        );
    }

    #[test]
    fn property_and_index_access() {
        assert_eq!(ok("[variables('obj').Key]"), json!("v"));
        assert_eq!(ok("[variables('obj').key]"), json!("v"));
        assert_eq!(ok("[variables('obj')['Key']]"), json!("v"));
        assert_eq!(ok("[variables('obj').nested.n]"), json!(1));
        assert_eq!(ok("[variables('list')[1]]"), json!("b"));
        assert_eq!(
            ok("[createArray(createObject('k', createArray(1, 2)))[0].k[1]]"),
            json!(2)
        );
        let e = err("[variables('obj').missing]");
        assert!(e.to_string().contains("The language expression property 'missing' doesn't exist, available properties are 'Key, nested'."), "{e}");
        let e = err("[variables('list')[5]]");
        assert!(
            e.to_string().contains("array index '5' is out of bounds"),
            "{e}"
        );
        let e = err("[variables('greeting').x]");
        assert!(
            e.to_string().contains("must be applied to an object"),
            "{e}"
        );
        let e = err("[variables('list')['x']]");
        assert!(
            e.to_string()
                .contains("cannot index a value of type 'Array'"),
            "{e}"
        );
    }

    #[test]
    fn string_functions() {
        assert_eq!(ok("[concat('a', 'b', 'c')]"), json!("abc"));
        assert_eq!(ok("[concat('n', 1, true())]"), json!("n1True"));
        assert_eq!(
            ok("[concat(createArray(1), createArray(2, 3))]"),
            json!([1, 2, 3])
        );
        assert_eq!(ok("[format('{0}-{1}', 'a', 2)]"), json!("a-2"));
        assert_eq!(
            ok("[format('{{literal}} {0}{0}', 'x')]"),
            json!("{literal} xx")
        );
        assert_eq!(ok("[format('{0}', true())]"), json!("True"));
        assert_eq!(ok("[toLower('AbC')]"), json!("abc"));
        assert_eq!(ok("[toUpper('AbC')]"), json!("ABC"));
        assert_eq!(ok("[string(5)]"), json!("5"));
        assert_eq!(ok("[string(true())]"), json!("True"));
        assert_eq!(ok("[string(createObject('a', 1))]"), json!("{\"a\":1}"));
        assert_eq!(ok("[string(createArray('a'))]"), json!("[\"a\"]"));
        assert_eq!(ok("[string('s')]"), json!("s"));
        assert_eq!(ok("[replace('a-b-c', '-', '_')]"), json!("a_b_c"));
        assert_eq!(ok("[substring('abcdef', 1, 3)]"), json!("bcd"));
        assert_eq!(ok("[substring('abcdef', 2)]"), json!("cdef"));
        assert_eq!(ok("[take('abcdef', 2)]"), json!("ab"));
        assert_eq!(ok("[skip('abcdef', 4)]"), json!("ef"));
        assert_eq!(ok("[trim('  x  ')]"), json!("x"));
        assert_eq!(
            ok("[split('a,b;c', createArray(',', ';'))]"),
            json!(["a", "b", "c"])
        );
        assert_eq!(ok("[split('a,,b', ',')]"), json!(["a", "", "b"]));
        assert_eq!(ok("[join(createArray('a', 'b'), '+')]"), json!("a+b"));
        assert_eq!(ok("[first('abc')]"), json!("a"));
        assert_eq!(ok("[last('abc')]"), json!("c"));
        assert_eq!(ok("[startsWith('Hello', 'he')]"), json!(true));
        assert_eq!(ok("[endsWith('Hello', 'LO')]"), json!(true));
        assert_eq!(ok("[contains('Hello', 'ell')]"), json!(true));
        assert_eq!(ok("[contains('Hello', 'ELL')]"), json!(false));
        assert_eq!(ok("[indexOf('abcabc', 'C')]"), json!(2));
        assert_eq!(ok("[lastIndexOf('abcabc', 'c')]"), json!(5));
        assert_eq!(ok("[indexOf('abc', 'z')]"), json!(-1));
        assert_eq!(ok("[padLeft('7', 3, '0')]"), json!("007"));
        assert_eq!(ok("[padLeft(7, 3)]"), json!("  7"));
        assert_eq!(
            ok("[base64('one, two, three')]"),
            json!("b25lLCB0d28sIHRocmVl")
        );
        assert_eq!(
            ok("[base64ToString('b25lLCB0d28sIHRocmVl')]"),
            json!("one, two, three")
        );
        assert_eq!(ok("[base64('ab')]"), json!("YWI="));
        assert_eq!(ok("[base64ToString('YWI=')]"), json!("ab"));
    }

    #[test]
    fn string_function_errors() {
        assert!(err("[substring('abc', 2, 5)]")
            .to_string()
            .contains("must refer to a location within the string"));
        assert!(err("[format('{0:D3}', 1)]")
            .to_string()
            .contains("not supported by this emulator"));
        assert!(err("[format('{1}', 'a')]")
            .to_string()
            .contains("refers to a missing argument"));
        assert!(err("[format('{0', 'a')]")
            .to_string()
            .contains("without a matching"));
        assert!(err("[concat('a', createArray(1))]")
            .to_string()
            .contains("either all arrays or all strings"));
        assert!(err("[toLower(1)]").to_string().contains(
            "expects its parameter to be of type 'String'. The provided value is of type 'Integer'"
        ));
        assert!(err("[toLower('a', 'b')]")
            .to_string()
            .contains("must have only one parameter"));
        assert!(err("[concat()]")
            .to_string()
            .contains("must have at least one parameter"));
        assert!(err("[replace('a', '', 'b')]")
            .to_string()
            .contains("cannot replace an empty string"));
        assert!(err("[padLeft('a', 3, 'xy')]")
            .to_string()
            .contains("single padding character"));
        assert!(err("[base64ToString('!!')]")
            .to_string()
            .contains("not valid base64"));
    }

    #[test]
    fn conversion_functions() {
        assert_eq!(ok("[int('42')]"), json!(42));
        assert_eq!(ok("[int(-3)]"), json!(-3));
        assert_eq!(ok("[bool('TRUE')]"), json!(true));
        assert_eq!(ok("[bool('false')]"), json!(false));
        assert_eq!(ok("[bool(1)]"), json!(true));
        assert_eq!(ok("[bool(0)]"), json!(false));
        assert_eq!(ok("[json('{\"a\": [1, null]}')]"), json!({"a": [1, null]}));
        assert_eq!(ok("[json('null')]"), json!(null));
        assert_eq!(ok("[array('x')]"), json!(["x"]));
        assert_eq!(ok("[array(createArray(1))]"), json!([1]));
        assert!(err("[int('x')]").to_string().contains("could not convert"));
        assert!(err("[bool('yes')]")
            .to_string()
            .contains("expects 'true', 'false'"));
        assert!(err("[json('{')]").to_string().contains("could not parse"));
    }

    #[test]
    fn logical_and_comparison_functions() {
        assert_eq!(ok("[if(true(), 'a', 'b')]"), json!("a"));
        assert_eq!(ok("[if(false(), 'a', 'b')]"), json!("b"));
        // Only the chosen branch is evaluated.
        assert_eq!(ok("[if(true(), 'a', variables('nope'))]"), json!("a"));
        assert_eq!(
            ok("[if(empty(createArray()), 'none', createArray()[0])]"),
            json!("none")
        );
        assert!(err("[if('x', 'a', 'b')]")
            .to_string()
            .contains("of type 'Boolean'"));
        assert!(err("[if(true(), 'a')]")
            .to_string()
            .contains("exactly three parameters"));
        assert_eq!(ok("[equals('a', 'a')]"), json!(true));
        assert_eq!(ok("[equals('a', 'A')]"), json!(false));
        assert_eq!(ok("[equals(1, 1)]"), json!(true));
        assert_eq!(
            ok("[equals(createArray(1, 'x'), createArray(1, 'x'))]"),
            json!(true)
        );
        assert_eq!(
            ok("[equals(createObject('a', 1), createObject('a', 2))]"),
            json!(false)
        );
        assert_eq!(ok("[not(equals(1, 2))]"), json!(true));
        assert_eq!(ok("[and(true(), false())]"), json!(false));
        assert_eq!(ok("[or(false(), true())]"), json!(true));
        assert_eq!(ok("[less(1, 2)]"), json!(true));
        assert_eq!(ok("[lessOrEquals(2, 2)]"), json!(true));
        assert_eq!(ok("[greater('b', 'a')]"), json!(true));
        assert_eq!(ok("[greaterOrEquals(1, 2)]"), json!(false));
        assert!(err("[less(1, 'a')]")
            .to_string()
            .contains("two integers or two strings"));
        assert!(err("[not('x')]").to_string().contains("of type 'Boolean'"));
    }

    #[test]
    fn collection_functions() {
        assert_eq!(ok("[empty('')]"), json!(true));
        assert_eq!(ok("[empty(createArray())]"), json!(true));
        assert_eq!(ok("[empty(createObject())]"), json!(true));
        assert_eq!(ok("[empty(null())]"), json!(true));
        assert_eq!(ok("[empty('x')]"), json!(false));
        assert_eq!(ok("[length('héllo')]"), json!(5));
        assert_eq!(ok("[length(variables('list'))]"), json!(2));
        assert_eq!(ok("[length(variables('obj'))]"), json!(2));
        assert!(err("[length(1)]")
            .to_string()
            .contains("of type 'String, Array or Object'"));
        assert_eq!(ok("[first(variables('list'))]"), json!("a"));
        assert_eq!(ok("[last(variables('list'))]"), json!("b"));
        assert_eq!(ok("[contains(variables('list'), 'b')]"), json!(true));
        assert_eq!(ok("[contains(variables('obj'), 'key')]"), json!(true));
        assert_eq!(ok("[take(variables('list'), 1)]"), json!(["a"]));
        assert_eq!(ok("[skip(variables('list'), 1)]"), json!(["b"]));
        assert_eq!(ok("[indexOf(variables('list'), 'b')]"), json!(1));
        assert_eq!(
            ok("[union(createArray(1, 2), createArray(2, 3))]"),
            json!([1, 2, 3])
        );
        assert_eq!(
            ok("[union(createObject('a', 1, 'n', createObject('x', 1)), createObject('b', 2, 'n', createObject('y', 2)))]"),
            json!({"a": 1, "n": {"x": 1, "y": 2}, "b": 2})
        );
        assert_eq!(ok("[coalesce(null(), 'x', 'y')]"), json!("x"));
        assert_eq!(ok("[range(2, 3)]"), json!([2, 3, 4]));
        assert_eq!(ok("[min(3, 1, 2)]"), json!(1));
        assert_eq!(ok("[max(createArray(3, 1, 2))]"), json!(3));
        assert!(err("[createObject('a')]")
            .to_string()
            .contains("even number of parameters"));
        assert!(err("[union(createArray(), createObject())]")
            .to_string()
            .contains("all objects or all arrays"));
    }

    #[test]
    fn numeric_functions() {
        assert_eq!(ok("[add(1, 2)]"), json!(3));
        assert_eq!(ok("[sub(1, 2)]"), json!(-1));
        assert_eq!(ok("[mul(3, 4)]"), json!(12));
        assert_eq!(ok("[div(7, 2)]"), json!(3));
        assert_eq!(ok("[mod(7, 2)]"), json!(1));
        assert!(err("[div(1, 0)]").to_string().contains("division by zero"));
        assert!(err("[add(1, '2')]")
            .to_string()
            .contains("of type 'Integer'"));
    }

    #[test]
    fn resource_id_forms() {
        let rg = ctx().resource_group_id();
        assert_eq!(
            ok("[resourceId('Microsoft.ContainerInstance/containerGroups', 'cg')]"),
            json!(format!(
                "{rg}/providers/Microsoft.ContainerInstance/containerGroups/cg"
            ))
        );
        assert_eq!(
            ok("[resourceId('other-rg', 'Microsoft.ManagedIdentity/userAssignedIdentities', 'id')]"),
            json!("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/other-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id")
        );
        assert_eq!(
            ok("[resourceId('sub2', 'rg2', 'Microsoft.Network/virtualNetworks/subnets', 'vnet', 'default')]"),
            json!("/subscriptions/sub2/resourceGroups/rg2/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default")
        );
        assert_eq!(
            ok("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet/default')]"),
            json!(format!(
                "{rg}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"
            ))
        );
        assert_eq!(
            ok("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '7f951dda-4ed3-4680-a7ca-43fe172d538d')]"),
            json!("/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/7f951dda-4ed3-4680-a7ca-43fe172d538d")
        );
        assert_eq!(
            ok("[tenantResourceId('Microsoft.Authorization/roleDefinitions', 'g')]"),
            json!("/providers/Microsoft.Authorization/roleDefinitions/g")
        );
        assert_eq!(
            ok("[extensionResourceId(resourceId('Microsoft.ContainerRegistry/registries', 'r'), 'Microsoft.Authorization/roleAssignments', 'g')]"),
            json!(format!("{rg}/providers/Microsoft.ContainerRegistry/registries/r/providers/Microsoft.Authorization/roleAssignments/g"))
        );
        assert!(
            err("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet')]")
                .to_string()
                .contains("requires '2' resource name argument(s), but '1' were given")
        );
        assert!(err("[resourceId('cg')]")
            .to_string()
            .contains("no argument is a resource type"));
        assert!(err("[resourceId('a', 'b', 'c', 'X.Y/z', 'n')]")
            .to_string()
            .contains("too many arguments"));
    }

    #[test]
    fn parameters_types_and_defaults() {
        let decl = json!({
            "s": {"type": "string", "defaultValue": "d"},
            "i": {"type": "int", "defaultValue": 3},
            "b": {"type": "Bool", "defaultValue": true},
            "o": {"type": "object", "defaultValue": {"k": "[parameters('s')]"}},
            "a": {"type": "array", "defaultValue": ["[parameters('i')]"]},
            "secret": {"type": "securestring"},
            "derived": {"type": "string", "defaultValue": "[concat(parameters('s'), '-', parameters('SECRET'))]"}
        });
        let params = json!({"Secret": {"value": "pw"}});
        let v = eval_with(
            json!([
                "[parameters('s')]",
                "[parameters('i')]",
                "[parameters('b')]",
                "[parameters('o')]",
                "[parameters('a')]",
                "[parameters('derived')]"
            ]),
            decl.clone(),
            params,
        )
        .unwrap();
        assert_eq!(v, json!(["d", 3, true, {"k": "d"}, [3], "d-pw"]));

        let v = eval_with(
            json!("[parameters('i')]"),
            decl.clone(),
            json!({"secret": {"value": "x"}, "i": {"value": 9}}),
        )
        .unwrap();
        assert_eq!(v, json!(9));
    }

    #[test]
    fn parameters_file_shape_is_accepted() {
        let file = json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
            "contentVersion": "1.0.0.0",
            "parameters": {"container_group_name": {"value": "from-file"}}
        });
        let out = evaluate(&python_worker_template(), &file, &ctx()).unwrap();
        assert_eq!(out.resources[0].name, "from-file");
    }

    #[test]
    fn missing_parameter() {
        let e =
            eval_with(json!("x"), json!({"needed": {"type": "string"}}), json!({})).unwrap_err();
        assert_eq!(
            e,
            TemplateError::MissingParameter {
                name: "needed".into(),
                path: "parameters.needed".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "Deployment template validation failed: 'The value for the template parameter 'needed' at path 'parameters.needed' is not provided. Please see https://aka.ms/arm-create-parameter-file for usage details.'."
        );
        assert_eq!(e.code(), "InvalidTemplate");
        assert_eq!(
            e.to_arm_error()["additionalInfo"][0]["info"]["path"],
            json!("properties.template.parameters.needed")
        );
        assert_eq!(e.to_arm_error()["code"], json!("InvalidTemplate"));
    }

    #[test]
    fn unknown_parameters() {
        let e = evaluate(
            &python_worker_template(),
            &json!({"bogus": {"value": 1}, "other": {"value": 2}}),
            &ctx(),
        )
        .unwrap_err();
        let TemplateError::UnknownParameters { names, supported } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(names, &["bogus", "other"]);
        assert_eq!(
            supported,
            &["container_group_name", "container_name", "location"]
        );
        assert!(e.to_string().contains("The template parameters 'bogus, other' in the parameters file are not valid; they are not present in the original template"));
        assert!(e.to_string().contains("The only supported parameters for this template are 'container_group_name, container_name, location'."));
        assert_eq!(e.path(), "");
    }

    #[test]
    fn parameter_type_errors_do_not_leak_values() {
        let decl =
            json!({"secret": {"type": "securestring"}, "n": {"type": "int", "defaultValue": 1}});
        let e = eval_with(
            json!("x"),
            decl.clone(),
            json!({"secret": {"value": 12345}}),
        )
        .unwrap_err();
        assert!(
            matches!(e, TemplateError::InvalidParameterValue { .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(
                "Template parameter JToken type is not valid. Expected 'String'. Actual 'Integer'."
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("12345"));
        let e = eval_with(
            json!("x"),
            decl.clone(),
            json!({"secret": {"value": "s"}, "n": {"value": "5"}}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Expected 'Integer'. Actual 'String'."),
            "{e}"
        );
        let e = eval_with(
            json!("x"),
            decl,
            json!({"secret": {"value": "s"}, "n": {"value": 1.5}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("Actual 'Float'."), "{e}");
        for (ty, value, actual) in [
            ("bool", json!("true"), "String"),
            ("object", json!([]), "Array"),
            ("array", json!({}), "Object"),
        ] {
            let e = eval_with(
                json!("x"),
                json!({"p": {"type": ty}}),
                json!({"p": {"value": value}}),
            )
            .unwrap_err();
            assert!(
                e.to_string().contains(&format!("Actual '{actual}'")),
                "{ty}: {e}"
            );
        }
    }

    #[test]
    fn parameter_default_expression_is_type_checked() {
        let e = eval_with(
            json!("x"),
            json!({"n": {"type": "int", "defaultValue": "[resourceGroup().name]"}}),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Expected 'Integer'. Actual 'String'."),
            "{e}"
        );
    }

    #[test]
    fn allowed_values_and_constraints() {
        let decl = json!({
            "sku": {"type": "string", "allowedValues": ["Basic", "Standard"], "defaultValue": "Basic"},
            "name": {"type": "string", "minLength": 3, "maxLength": 5, "defaultValue": "abcd"},
            "count": {"type": "int", "minValue": 1, "maxValue": 3, "defaultValue": 2},
            "zones": {"type": "array", "allowedValues": ["1", "2", "3"], "defaultValue": ["1"]}
        });
        assert_eq!(
            eval_with(
                json!("[parameters('sku')]"),
                decl.clone(),
                json!({"sku": {"value": "Standard"}})
            )
            .unwrap(),
            json!("Standard")
        );
        let e = eval_with(
            json!("x"),
            decl.clone(),
            json!({"sku": {"value": "Premium"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("The provided value for the template parameter 'sku' at path 'parameters.sku' is not valid. The parameter value is not part of the allowed value(s): 'Basic,Standard'."), "{e}");
        assert!(!e.to_string().contains("Premium"));
        let e = eval_with(
            json!("x"),
            decl.clone(),
            json!({"zones": {"value": ["1", "4"]}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("allowed value(s): '1,2,3'"), "{e}");
        let e = eval_with(json!("x"), decl.clone(), json!({"name": {"value": "ab"}})).unwrap_err();
        assert!(
            e.to_string().contains("greater than or equal to '3'"),
            "{e}"
        );
        let e = eval_with(
            json!("x"),
            decl.clone(),
            json!({"name": {"value": "abcdef"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("less than or equal to '5'"), "{e}");
        let e = eval_with(json!("x"), decl.clone(), json!({"count": {"value": 0}})).unwrap_err();
        assert!(
            e.to_string().contains("greater than or equal to '1'"),
            "{e}"
        );
        let e = eval_with(json!("x"), decl, json!({"count": {"value": 4}})).unwrap_err();
        assert!(e.to_string().contains("less than or equal to '3'"), "{e}");
    }

    #[test]
    fn parameter_errors() {
        let e = err("[parameters('nope')]");
        assert!(
            e.to_string()
                .contains("The template parameter 'nope' is not found."),
            "{e}"
        );
        assert_eq!(e.path(), "resources[0].properties.x");
        let e = eval_with(
            json!("x"),
            json!({"p": {"type": "string"}}),
            json!({"p": "bare"}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("must be an object with a 'value' property"),
            "{e}"
        );
        let e = eval_with(
            json!("x"),
            json!({"p": {"type": "string"}}),
            json!({"p": {"reference": {"keyVault": {}}}}),
        )
        .unwrap_err();
        assert!(
            matches!(e, TemplateError::UnsupportedFeature { .. }),
            "{e:?}"
        );
        let e = eval_with(
            json!("x"),
            json!({"p": {"type": "text"}}),
            json!({"p": {"value": "v"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("has type 'text'"), "{e}");
        let e = eval_with(json!("x"), json!({"a": {"type": "string", "defaultValue": "[parameters('b')]"}, "b": {"type": "string", "defaultValue": "[parameters('a')]"}}), json!({})).unwrap_err();
        assert!(e.to_string().contains("refers to itself"), "{e}");
        let e = eval_with(
            json!("x"),
            json!({"a": {"type": "string", "defaultValue": "[variables('greeting')]"}}),
            json!({}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("The template function 'variables' is not expected at this location."),
            "{e}"
        );
        let e = evaluate(&python_worker_template(), &json!("nope"), &ctx()).unwrap_err();
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
    }

    #[test]
    fn new_guid_only_in_parameter_defaults() {
        let v = eval_with(
            json!("[parameters('g')]"),
            json!({"g": {"type": "string", "defaultValue": "[newGuid()]"}}),
            json!({}),
        )
        .unwrap();
        assert!(Uuid::parse_str(v.as_str().unwrap()).is_ok());
        assert!(err("[newGuid()]")
            .to_string()
            .contains("can only be used in the default value of a parameter"));
    }

    #[test]
    fn variables_reference_parameters_and_each_other() {
        let template = json!({
            "parameters": {"prefix": {"type": "string", "defaultValue": "pre"}},
            "variables": {
                "full": "[concat(variables('base'), '-', uniqueString(resourceGroup().id))]",
                "base": "[toLower(concat(parameters('prefix'), 'FIX'))]",
                "obj": {"name": "[variables('base')]", "list": ["[variables('base')]"]}
            },
            "resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "[variables('full')]", "properties": {"o": "[variables('OBJ')]"}}]
        });
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        assert_eq!(out.resources[0].name, "prefix-bmg7c6xu4tw46");
        assert_eq!(
            out.resources[0].body["properties"]["o"],
            json!({"name": "prefix", "list": ["prefix"]})
        );
    }

    #[test]
    fn variable_errors() {
        let e = err("[variables('nope')]");
        assert!(
            e.to_string()
                .contains("The template variable 'nope' is not found."),
            "{e}"
        );
        let template = json!({"variables": {"a": "[variables('b')]", "b": "[variables('a')]"}, "resources": []});
        let e = evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        assert!(e.to_string().contains("circular reference"), "{e}");
        // Unused variables are still validated, as in ARM.
        let template = json!({"variables": {"unused": "[bogusFn()]"}, "resources": []});
        let e = evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownFunction {
                function: "bogusFn".into(),
                path: "variables.unused".into()
            }
        );
    }

    #[test]
    fn unsupported_and_unknown_functions() {
        let e = err("[reference('x').ipAddress.ip]");
        assert_eq!(
            e,
            TemplateError::UnsupportedFunction {
                function: "reference".into(),
                path: "resources[0].properties.x".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "Deployment template validation failed: 'The template function 'reference' at path 'resources[0].properties.x' is not supported by this emulator. Please see https://aka.ms/arm-functions for usage details.'."
        );
        assert_eq!(e.code(), "InvalidTemplate");
        assert!(matches!(
            err("[listKeys('x', '2020-01-01')]"),
            TemplateError::UnsupportedFunction { .. }
        ));
        assert!(matches!(
            err("[utcNow()]"),
            TemplateError::UnsupportedFunction { .. }
        ));
        assert!(matches!(
            err("[listKeys('x')]"),
            TemplateError::UnsupportedFunction { .. }
        ));
        let e = err("[frobnicate('x')]");
        assert!(e.to_string().contains("The template function 'frobnicate' at path 'resources[0].properties.x' is not valid."), "{e}");
        let e = err("[contoso.uniqueName('x')]");
        assert!(
            matches!(e, TemplateError::UnsupportedFeature { ref feature, .. } if feature.contains("contoso.uniqueName")),
            "{e:?}"
        );
    }

    #[test]
    fn parse_errors() {
        // `"[concat('a'"` does not end with `]`, so it is a literal, not a broken expression.
        assert_eq!(ok("[concat('a'"), json!("[concat('a'"));
        let e = err("[concat('a']");
        assert!(
            e.to_string()
                .contains("expected token 'RightParenthesis' and actual 'EndOfData'"),
            "{e}"
        );
        assert!(err("[concat('a)]").to_string().contains("not terminated"));
        assert!(err("[foo]").to_string().contains("must be a function call"));
        assert!(err("[]").to_string().contains("is empty"));
        assert!(err("[concat('a') 'b']")
            .to_string()
            .contains("expected token 'EndOfData' and actual 'String'"));
        assert!(err("[concat('a',)]")
            .to_string()
            .contains("expected token 'Identifier'"));
        assert!(err("[resourceGroup().]")
            .to_string()
            .contains("expected token 'Identifier' and actual 'EndOfData'"));
        assert!(err("[concat('a' # 'b')]")
            .to_string()
            .contains("the string character '#' at position"));
        assert!(err("[add(99999999999999999999, 1)]")
            .to_string()
            .contains("not a valid integer"));
    }

    #[test]
    fn property_name_expressions() {
        assert_eq!(
            eval(json!({"[concat('a', 'b')]": 1, "plain": 2})).unwrap(),
            json!({"ab": 1, "plain": 2})
        );
        let e = eval(json!({"[length('ab')]": 1})).unwrap_err();
        assert!(e.to_string().contains("must evaluate to a string"), "{e}");
        let e = eval(json!({"[concat('a', 'b')]": 1, "ab": 2})).unwrap_err();
        assert!(e.to_string().contains("occurs more than once"), "{e}");
        assert_eq!(e.path(), "resources[0].properties.x.ab");
    }

    #[test]
    fn hostile_inputs_are_refused_not_crashing() {
        assert!(
            err("[substring('abc', 9223372036854775807, 9223372036854775807)]")
                .to_string()
                .contains("within the string")
        );
        assert!(err("[padLeft('a', 100000000)]")
            .to_string()
            .contains("total length between 0 and 10000"));
        assert!(err("[range(0, 100000)]")
            .to_string()
            .contains("count between 0 and 10000"));
        assert_eq!(ok("[length(range(9223372036854775800, 3))]"), json!(3));
        let deep = format!("[{}'x'{}]", "concat(".repeat(100), ")".repeat(100));
        assert!(err(&deep)
            .to_string()
            .contains("nests deeper than 64 levels"));
        let fine = format!("[{}'x'{}]", "concat(".repeat(30), ")".repeat(30));
        assert_eq!(ok(&fine), json!("x"));
    }

    #[test]
    fn error_paths_locate_the_failing_value() {
        let template = json!({
            "resources": [
                {"type": "X.Y/z", "apiVersion": "1", "name": "ok"},
                {"type": "X.Y/z", "apiVersion": "1", "name": "r", "tags": {"my tag": "[bad()]"}}
            ]
        });
        let e = evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        assert_eq!(e.path(), "resources[1].tags['my tag']");
        let template = json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "properties": {"list": [1, "[bad()]"]}}]});
        assert_eq!(
            evaluate(&template, &Value::Null, &ctx())
                .unwrap_err()
                .path(),
            "resources[0].properties.list[1]"
        );
    }

    #[test]
    fn resource_shape_errors() {
        let bad = |template: Value| evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        let e = bad(json!({"resources": [{"apiVersion": "1", "name": "r"}]}));
        assert!(
            e.to_string()
                .contains("missing the required property 'type'"),
            "{e}"
        );
        let e = bad(json!({"resources": [{"type": "X.Y/z", "name": "r"}]}));
        assert!(
            e.to_string()
                .contains("missing the required property 'apiVersion'"),
            "{e}"
        );
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "[length('ab')]"}]}),
        );
        assert!(
            e.to_string().contains("'name' must be a non-empty string"),
            "{e}"
        );
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "location": 5}]}),
        );
        assert!(e.to_string().contains("'location' must be a string"), "{e}");
        let e = bad(json!({"resources": ["nope"]}));
        assert!(e.to_string().contains("must be a JSON object"), "{e}");
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "R"}, {"type": "x.y/Z", "apiVersion": "2", "name": "r"}]}),
        );
        assert!(e.to_string().contains("is defined multiple times"), "{e}");
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "dependsOn": "x"}]}),
        );
        assert!(
            e.to_string().contains("'dependsOn' must be an array"),
            "{e}"
        );
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "dependsOn": [1]}]}),
        );
        assert!(e.to_string().contains("must evaluate to a string"), "{e}");
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "condition": "[string(1)]"}]}),
        );
        assert!(
            e.to_string()
                .contains("condition must evaluate to a boolean"),
            "{e}"
        );
    }

    #[test]
    fn template_shape_errors() {
        let bad = |template: Value| evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        assert!(bad(json!([])).to_string().contains("must be a JSON object"));
        assert!(bad(json!({}))
            .to_string()
            .contains("Required property 'resources' not found in JSON."));
        assert!(bad(json!({"resources": "x"}))
            .to_string()
            .contains("must be a JSON array"));
        assert!(matches!(
            bad(json!({"resources": {"a": {}}})),
            TemplateError::UnsupportedFeature { .. }
        ));
        assert!(matches!(
            bad(json!({"languageVersion": "2.0", "resources": {}})),
            TemplateError::UnsupportedFeature { .. }
        ));
        assert!(matches!(
            bad(json!({"functions": [{"namespace": "x"}], "resources": []})),
            TemplateError::UnsupportedFeature { .. }
        ));
        assert!(bad(json!({"parameters": [], "resources": []}))
            .to_string()
            .contains("'parameters' must be a JSON object"));
        assert!(bad(json!({"parameters": {"p": "string"}, "resources": []}))
            .to_string()
            .contains("must be a JSON object with a 'type'"));
        assert!(bad(json!({"parameters": {"p": {"type": "string", "defaultValue": "a"}, "P": {"type": "string", "defaultValue": "b"}}, "resources": []}))
            .to_string()
            .contains("declared more than once"));
        // An empty `functions` array is what many exported templates carry; it is fine.
        assert!(evaluate(
            &json!({"functions": [], "resources": []}),
            &Value::Null,
            &ctx()
        )
        .is_ok());
    }

    #[test]
    fn resource_copy_loops() {
        let template = json!({
            "parameters": {"n": {"type": "int", "defaultValue": 3}},
            "resources": [
                {
                    "type": "Microsoft.ContainerInstance/containerGroups", "apiVersion": "2023-05-01",
                    "name": "[concat('cg-', copyIndex(1))]",
                    "copy": {"name": "groups", "count": "[parameters('n')]"},
                    "dependsOn": ["net"],
                    "properties": {"index": "[copyIndex()]", "named": "[copyIndex('groups', 10)]"}
                },
                {"type": "X.Y/z", "apiVersion": "1", "name": "after", "dependsOn": ["groups"]},
                {"type": "X.Y/z", "apiVersion": "1", "name": "net"}
            ]
        });
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        let names: Vec<&str> = out.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["net", "cg-1", "cg-2", "cg-3", "after"]);
        assert_eq!(
            out.resources[2].body["properties"],
            json!({"index": 1, "named": 11})
        );
        assert!(!out.resources[1]
            .body
            .as_object()
            .unwrap()
            .contains_key("copy"));
        assert_eq!(out.resources[4].depends_on, ["groups"]);

        // A loop of zero instances is valid, and so is depending on it.
        let out = evaluate(&template, &json!({"n": {"value": 0}}), &ctx()).unwrap();
        let names: Vec<&str> = out.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["after", "net"]);
    }

    #[test]
    fn property_variable_and_output_copy() {
        let template = json!({
            "parameters": {"env": {"type": "array", "defaultValue": ["A", "B"]}},
            "variables": {
                "copy": [{"name": "ports", "count": 2, "input": "[add(8000, copyIndex('ports'))]"}],
                "nested": {"copy": [{"name": "items", "count": 2, "input": {"i": "[copyIndex('items')]"}}], "other": 1}
            },
            "resources": [{
                "type": "Microsoft.ContainerInstance/containerGroups", "apiVersion": "2023-05-01", "name": "cg",
                "properties": {
                    "containers": [{"name": "c", "properties": {
                        "copy": [{
                            "name": "environmentVariables",
                            "count": "[length(parameters('env'))]",
                            "input": {"name": "[parameters('env')[copyIndex('environmentVariables')]]", "value": "[string(copyIndex('environmentVariables'))]"}
                        }],
                        "image": "busybox"
                    }}]
                }
            }],
            "outputs": {
                "ports": {"type": "array", "value": "[variables('ports')]"},
                "nested": {"type": "object", "value": "[variables('nested')]"},
                "squares": {"type": "array", "copy": {"count": 3, "input": "[mul(copyIndex(), copyIndex())]"}}
            }
        });
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        assert_eq!(
            out.resources[0].body["properties"]["containers"][0]["properties"],
            json!({"environmentVariables": [{"name": "A", "value": "0"}, {"name": "B", "value": "1"}], "image": "busybox"})
        );
        assert_eq!(out.outputs["ports"]["value"], json!([8000, 8001]));
        assert_eq!(
            out.outputs["nested"]["value"],
            json!({"items": [{"i": 0}, {"i": 1}], "other": 1})
        );
        assert_eq!(
            out.outputs["squares"],
            json!({"type": "Array", "value": [0, 1, 4]})
        );
    }

    #[test]
    fn nested_copy_loops_resolve_named_indexes() {
        let template = json!({"resources": [{
            "type": "X.Y/z", "apiVersion": "1", "name": "[string(copyIndex())]",
            "copy": {"name": "outer", "count": 2},
            "properties": {"copy": [{"name": "pairs", "count": 2, "input": "[concat(string(copyIndex('outer')), '.', string(copyIndex()))]"}]}
        }]});
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        assert_eq!(
            out.resources[0].body["properties"]["pairs"],
            json!(["0.0", "0.1"])
        );
        assert_eq!(
            out.resources[1].body["properties"]["pairs"],
            json!(["1.0", "1.1"])
        );
    }

    #[test]
    fn copy_errors() {
        let e = err("[copyIndex()]");
        assert!(
            e.to_string()
                .contains("The template function 'copyIndex' is not expected at this location."),
            "{e}"
        );
        let e = eval(json!({"copy": [{"name": "x", "count": 1, "input": "[copyIndex('y')]"}]}))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("copyIndex' (loop 'y') is not expected"),
            "{e}"
        );
        let bad = |template: Value| evaluate(&template, &Value::Null, &ctx()).unwrap_err();
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "copy": {"name": "c", "count": 801}}]}),
        );
        assert!(
            e.to_string().contains("between 0 and 800; got '801'"),
            "{e}"
        );
        assert_eq!(e.path(), "resources[0].copy.count");
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "copy": {"name": "c", "count": "x"}}]}),
        );
        assert!(
            e.to_string().contains("got a value of type 'String'"),
            "{e}"
        );
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "copy": {"count": 2}}]}),
        );
        assert!(
            e.to_string().contains("needs a non-empty string 'name'"),
            "{e}"
        );
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "copy": {"name": "c"}}]}),
        );
        assert!(e.to_string().contains("needs a 'count'"), "{e}");
        // Every instance gets the same name: a duplicate, as in ARM.
        let e = bad(
            json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "r", "copy": {"name": "c", "count": 2}}]}),
        );
        assert!(e.to_string().contains("defined multiple times"), "{e}");
        let e = eval(json!({"copy": [{"name": "x", "count": 1}]})).unwrap_err();
        assert!(e.to_string().contains("needs an 'input'"), "{e}");
        let e = bad(json!({"variables": {"copy": {"name": "x"}}, "resources": []}));
        assert!(e.to_string().contains("must be an array"), "{e}");
    }

    #[test]
    fn conditions_depends_on_and_child_resources() {
        let template = json!({
            "parameters": {"withIdentity": {"type": "bool", "defaultValue": false}},
            "resources": [
                {
                    "type": "Microsoft.ManagedIdentity/userAssignedIdentities", "apiVersion": "2023-01-31",
                    "name": "id", "location": "[resourceGroup().location]",
                    "condition": "[parameters('withIdentity')]"
                },
                {
                    "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-04-01",
                    "name": "vnet", "location": "[resourceGroup().location]",
                    "resources": [{"type": "subnets", "apiVersion": "2023-04-01", "name": "default", "dependsOn": ["vnet"]}]
                },
                {
                    "type": "Microsoft.ContainerInstance/containerGroups", "apiVersion": "2023-05-01",
                    "name": "cg", "condition": true,
                    "dependsOn": ["[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet', 'default')]"],
                    "identity": {"type": "UserAssigned", "userAssignedIdentities": {
                        "[resourceId('Microsoft.ManagedIdentity/userAssignedIdentities', 'id')]": {},
                        "[[literal]": {}
                    }},
                    "tags": {"owner": "[deployment().name]"},
                    "sku": "Standard"
                }
            ]
        });
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        let names: Vec<(&str, &str)> = out
            .resources
            .iter()
            .map(|r| (r.type_.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("Microsoft.Network/virtualNetworks", "vnet"),
                ("Microsoft.Network/virtualNetworks/subnets", "vnet/default"),
                ("Microsoft.ContainerInstance/containerGroups", "cg"),
            ]
        );
        assert_eq!(out.resources[1].depends_on, ["vnet"]);
        assert!(out.resources[1].location.is_none());
        assert_eq!(
            out.resources[1].body["type"],
            json!("Microsoft.Network/virtualNetworks/subnets")
        );
        assert!(out.resources[0].body.get("resources").is_none());
        let cg = &out.resources[2];
        assert_eq!(
            cg.depends_on,
            [format!(
                "{}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default",
                ctx().resource_group_id()
            )]
        );
        assert_eq!(cg.body["tags"], json!({"owner": "flow-deploy"}));
        assert_eq!(cg.body["sku"], json!("Standard"));
        // Object keys are evaluated too (and unescaped).
        let ids = cg.body["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap();
        let keys: Vec<&str> = ids.keys().map(String::as_str).collect();
        let id = format!(
            "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id",
            ctx().resource_group_id()
        );
        assert_eq!(keys, [id.as_str(), "[literal]"]);
        assert!(cg.body.get("condition").is_none() && cg.body.get("dependsOn").is_none());

        let with = evaluate(&template, &json!({"withIdentity": {"value": true}}), &ctx()).unwrap();
        assert_eq!(with.resources.len(), 4);
        assert_eq!(with.resources[0].location.as_deref(), Some("westeurope"));
    }

    fn res(name: &str, deps: &[&str]) -> Value {
        json!({"type": "X.Y/z", "apiVersion": "1", "name": name, "dependsOn": deps})
    }

    fn order(template: Value) -> Result<Vec<String>, TemplateError> {
        evaluate(&template, &Value::Null, &ctx())
            .map(|t| t.resources.into_iter().map(|r| r.name).collect())
    }

    #[test]
    fn resources_are_ordered_by_depends_on() {
        let rg = ctx().resource_group_id();
        let t = json!({"resources": [
            res("c", &["b", &format!("{rg}/providers/X.Y/z/a")]),
            res("b", &["X.Y/z/a"]),
            res("a", &[]),
            res("d", &[]),
        ]});
        // `a` first, then `b` (needs `a`), then `c` (needs both); `d` keeps its place after.
        assert_eq!(order(t).unwrap(), ["a", "b", "c", "d"]);
        // Independent resources keep template order.
        assert_eq!(
            order(json!({"resources": [res("z", &[]), res("y", &[])]})).unwrap(),
            ["z", "y"]
        );
    }

    #[test]
    fn dependency_errors() {
        let e = order(json!({"resources": [res("a", &["nope"])]})).unwrap_err();
        assert!(
            e.to_string()
                .contains("The resource 'nope' is not defined in the template."),
            "{e}"
        );
        let e = order(json!({"resources": [res("a", &["b"]), res("b", &["a"])]})).unwrap_err();
        assert!(
            e.to_string()
                .contains("Circular dependency detected on resource: '"),
            "{e}"
        );
        let e = order(json!({"resources": [res("a", &["a"])]})).unwrap_err();
        assert!(e.to_string().contains("Circular dependency"), "{e}");
        // A dependency on a resource skipped by its condition is dropped, as in ARM.
        let mut skipped = res("gone", &[]);
        skipped["condition"] = json!(false);
        let t = json!({"resources": [res("a", &["gone"]), skipped]});
        let out = evaluate(&t, &Value::Null, &ctx()).unwrap();
        assert_eq!(out.resources.len(), 1);
        assert!(out.resources[0].depends_on.is_empty());
    }

    #[test]
    fn resource_ids_and_segment_lengths() {
        let out = evaluate(&python_worker_template(), &Value::Null, &ctx()).unwrap();
        assert_eq!(
            out.resources[0].id,
            format!(
                "{}/providers/Microsoft.ContainerInstance/containerGroups/bmg7c6xu4tw46",
                ctx().resource_group_id()
            )
        );
        let e = order(json!({"resources": [{"type": "X.Y/z", "apiVersion": "1", "name": "a/b"}]}))
            .unwrap_err();
        assert!(
            e.to_string().contains("has incorrect segment lengths"),
            "{e}"
        );
        let e = order(json!({"resources": [{"type": "XY", "apiVersion": "1", "name": "a"}]}))
            .unwrap_err();
        assert!(
            e.to_string().contains("has incorrect segment lengths"),
            "{e}"
        );
    }

    #[test]
    fn parameters_are_echoed_without_secrets() {
        let t = json!({
            "parameters": {
                "name": {"type": "string", "defaultValue": "[resourceGroup().name]"},
                "pw": {"type": "secureString"},
                "n": {"type": "int", "defaultValue": 2}
            },
            "resources": []
        });
        let out = evaluate(&t, &json!({"pw": {"value": "hunter2"}}), &ctx()).unwrap();
        assert_eq!(
            Value::Object(out.parameters),
            json!({"name": {"type": "String", "value": "my-rg"}, "pw": {"type": "SecureString"}, "n": {"type": "Int", "value": 2}})
        );
    }

    #[test]
    fn outputs_are_evaluated_and_typed() {
        let template = json!({
            "parameters": {"pw": {"type": "securestring", "defaultValue": "s3cret"}},
            "resources": [],
            "outputs": {
                "name": {"type": "string", "value": "[uniqueString('test')]"},
                "count": {"type": "int", "value": "[length(createArray(1, 2))]"},
                "flag": {"type": "bool", "value": true},
                "obj": {"type": "object", "value": {"id": "[resourceGroup().id]"}},
                "arr": {"type": "array", "value": "[createArray('a')]"},
                "secret": {"type": "securestring", "value": "[parameters('pw')]"},
                "skipped": {"type": "string", "condition": "[equals(1, 2)]", "value": "x"}
            }
        });
        let out = evaluate(&template, &Value::Null, &ctx()).unwrap();
        assert_eq!(
            out.outputs["name"],
            json!({"type": "String", "value": "rbgf3xv4ufgzg"})
        );
        assert_eq!(out.outputs["count"], json!({"type": "Int", "value": 2}));
        assert_eq!(out.outputs["flag"], json!({"type": "Bool", "value": true}));
        assert_eq!(
            out.outputs["obj"],
            json!({"type": "Object", "value": {"id": ctx().resource_group_id()}})
        );
        assert_eq!(out.outputs["arr"], json!({"type": "Array", "value": ["a"]}));
        assert_eq!(out.outputs["secret"], json!({"type": "SecureString"}));
        assert!(!out.outputs.contains_key("skipped"));
    }

    #[test]
    fn output_errors() {
        let bad = |outputs: Value| {
            evaluate(
                &json!({"resources": [], "outputs": outputs}),
                &Value::Null,
                &ctx(),
            )
            .unwrap_err()
        };
        let e = bad(json!({"o": {"type": "int", "value": "x"}}));
        assert!(
            e.to_string()
                .contains("the value is of type 'String' but the output is declared as 'Int'"),
            "{e}"
        );
        assert_eq!(e.path(), "outputs.o.value");
        assert!(bad(json!({"o": {"type": "string"}}))
            .to_string()
            .contains("has no 'value'"));
        assert!(bad(json!({"o": {"type": "text", "value": "x"}}))
            .to_string()
            .contains("has type 'text'"));
        assert!(bad(json!({"o": "x"}))
            .to_string()
            .contains("must be an object"));
        let e = bad(json!({"o": {"type": "string", "copy": {"count": 1, "input": "x"}}}));
        assert!(
            e.to_string()
                .contains("is of type 'Array' but the output is declared as 'String'"),
            "{e}"
        );
        assert_eq!(e.path(), "outputs.o.copy");
    }

    #[test]
    fn arm_error_object_shape() {
        let e = err("[bogus()]");
        let v = e.to_arm_error();
        assert_eq!(v["code"], json!("InvalidTemplate"));
        assert_eq!(v["message"], json!(e.to_string()));
        assert_eq!(v["additionalInfo"][0]["type"], json!("TemplateViolation"));
        assert_eq!(
            v["additionalInfo"][0]["info"]["path"],
            json!("properties.template.resources[0].properties.x")
        );
        let unknown = TemplateError::UnknownParameters {
            names: vec!["a".into()],
            supported: vec![],
        };
        assert_eq!(
            unknown.to_arm_error()["additionalInfo"][0]["info"]["path"],
            json!("")
        );
    }
}
