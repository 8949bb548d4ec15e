//! Prefect's `{{ placeholder }}` templating, reproduced exactly (Prefect 3.9.1,
//! `prefect/utilities/templating/__init__.py`).
//!
//! A work pool's base job template is JSON in which strings may hold placeholders. Prefect
//! renders them in three passes, and a drop-in worker must render them the same way, because
//! users write templates against Prefect's behaviour:
//!
//! 1. [`apply_values`] fills standard placeholders (`{{ cpu }}`, `{{ arr[0].x }}`) from the job
//!    variables and `{{ $NAME }}` from the worker's environment.
//! 2. [`resolve_block_document_references`] fills `{{ prefect.blocks.<slug>.<name>[.<path>] }}`
//!    and replaces `{"$ref": {"block_document_id": ..}}` objects with block data.
//! 3. [`resolve_variables`] fills `{{ prefect.variables.<name> }}`.
//!
//! # The rules every pass shares
//!
//! - A placeholder matches Python's regex `{{\s*([\w\.\-\[\]$]+)\s*}}`, where `\w` and `\s` are
//!   Python's *Unicode* classes. They differ from Rust's (`\x1c` is a space in Python, some marks
//!   are not word characters), so the classes come from tables generated from CPython itself
//!   (`py_unicode.rs`).
//! - A string that is exactly one placeholder is replaced by the *typed* value (a number stays a
//!   number, an object stays an object). Anything else is text interpolation, where a value is
//!   written as Python's `str()` would write it: `True`, `None`, `2.0`, `1e-05`,
//!   `{'a': 1, 'b': [1, 2]}`. [`python_str`] reproduces that, down to `repr()`'s choice of quote
//!   and its escapes for strings inside containers.
//! - A missing standard placeholder that makes up the whole string removes the key (or list
//!   item) that held it, so the worker's own default applies; embedded, it becomes `""`.
//!
//! Where Python's result depends on the iteration order of a `set` (two block placeholders in one
//! string whose values contain each other's text), this module uses the order in which the
//! placeholders appear; Python's answer there changes from run to run.

#[rustfmt::skip]
mod py_unicode;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

/// What a placeholder refers to, decided by the prefix of its name (Python's `PlaceholderType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlaceholderKind {
    /// A job variable, possibly a dotted or indexed path: `{{ cpu }}`, `{{ a.b[0] }}`.
    Standard,
    /// `{{ prefect.blocks.<slug>.<name>[.<path>] }}`.
    BlockDocument,
    /// `{{ prefect.variables.<name> }}`.
    Variable,
    /// `{{ $NAME }}`: the worker's environment variable `NAME`.
    EnvVar,
}

impl PlaceholderKind {
    /// Python's `PlaceholderType` value, e.g. `"block_document"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PlaceholderKind::Standard => "standard",
            PlaceholderKind::BlockDocument => "block_document",
            PlaceholderKind::Variable => "variable",
            PlaceholderKind::EnvVar => "env_var",
        }
    }

    fn of(name: &str) -> Self {
        if name.starts_with(BLOCK_PREFIX) {
            PlaceholderKind::BlockDocument
        } else if name.starts_with(VARIABLE_PREFIX) {
            PlaceholderKind::Variable
        } else if name.starts_with('$') {
            PlaceholderKind::EnvVar
        } else {
            PlaceholderKind::Standard
        }
    }
}

/// One placeholder found in a template (Python's `Placeholder` named tuple).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Placeholder {
    /// The matched text, braces and inner whitespace included: `"{{ cpu }}"`.
    pub full_match: String,
    /// The name between the braces: `"cpu"`.
    pub name: String,
    /// What the name refers to.
    pub kind: PlaceholderKind,
}

const BLOCK_PREFIX: &str = "prefect.blocks.";
const VARIABLE_PREFIX: &str = "prefect.variables.";

/// A failure to read a block document or variable through a [`TemplateSource`].
///
/// "Not found" is not an error here: sources return `Ok(None)` for it, and the resolvers decide
/// what it means (a crash for a block, `""` for a variable, as in Prefect).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by another error, e.g. the HTTP client's.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SourceError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Why a template could not be rendered. Prefect crashes the flow run in each of these cases.
#[derive(Debug, thiserror::Error)]
pub enum TemplatingError {
    /// `{{ prefect.blocks.<slug>.<name> }}` names a block document the server does not have.
    #[error(
        "block not found: '{name}' of type '{slug}' is referenced in the deployment or work pool \
         configuration but does not exist; create the block or change the reference"
    )]
    BlockNotFound {
        /// The block type slug.
        slug: String,
        /// The block document name.
        name: String,
    },
    /// `{"$ref": {"block_document_id": ..}}` names a block document the server does not have.
    #[error(
        "block not found: id '{id}' is referenced in the deployment or work pool configuration \
         but does not exist; create the block or change the reference"
    )]
    BlockIdNotFound {
        /// The referenced id, as text.
        id: String,
    },
    /// A block placeholder without both a type slug and a document name.
    #[error(
        "invalid block placeholder '{placeholder}': expected \
         prefect.blocks.<block-type-slug>.<block-document-name>"
    )]
    InvalidBlockPlaceholder {
        /// The placeholder's name.
        placeholder: String,
    },
    /// A block placeholder's path (`.value.key`, `.list[0]`) is not in the block's data.
    #[error(
        "block placeholder '{placeholder}': the key path '{key_path}' is not in the data of \
         block '{name}' of type '{slug}'; check the path against the block's fields"
    )]
    BlockKeyPathNotFound {
        /// The placeholder, braces included.
        placeholder: String,
        /// The block type slug.
        slug: String,
        /// The block document name.
        name: String,
        /// The path after the block name.
        key_path: String,
    },
    /// A block placeholder embedded in text resolved to an object or array.
    ///
    /// The template itself is not part of the message: after the first pass it can hold
    /// substituted job variables, which may be secret.
    #[error(
        "block placeholder '{placeholder}' is embedded in text but resolved to a {kind}, which \
         has no string form; reference a scalar attribute instead (for example '.value' or \
         '.url')"
    )]
    InlineBlockNotScalar {
        /// The placeholder, braces included.
        placeholder: String,
        /// `dict` or `list`, in Prefect's words.
        kind: &'static str,
    },
    /// An object has a `$ref` key whose value is not an object (Prefect fails on `.get`).
    #[error(
        "invalid block reference: the value of '$ref' must be an object like \
         {{\"block_document_id\": \"<id>\"}}, found {found}"
    )]
    InvalidBlockReference {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// Reading a block document or variable failed for a reason other than "not found".
    #[error("{what}")]
    Source {
        /// What was being read.
        what: String,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// The base job template is not shaped as Prefect requires.
    #[error("invalid base job template: {0}")]
    InvalidBaseJobTemplate(String),
    /// The job configuration uses placeholders that are not declared variables.
    #[error(
        "invalid base job template: the job configuration uses undeclared variable(s) {}; \
         every placeholder must be a property of the `variables` schema",
        .names.join(", ")
    )]
    UndeclaredVariables {
        /// The undeclared placeholder names, sorted.
        names: Vec<String>,
    },
    /// Job variables that Prefect cannot merge (e.g. `env.A.B` next to a scalar `env.A`).
    #[error("invalid job variables: {0}")]
    InvalidJobVariables(String),
}

/// Where block documents and variables come from: the Prefect API in the worker, a fake in tests.
///
/// Each method returns `Ok(None)` when the object does not exist (HTTP 404). The futures are
/// `Send` so a worker can render configurations inside spawned tasks; an implementation can
/// still write the methods as `async fn` as long as their bodies are `Send`.
pub trait TemplateSource: Sync {
    /// `GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true`, field
    /// `data`.
    fn block_document_by_slug_and_name(
        &self,
        slug: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;

    /// `GET /block_documents/{id}?include_secrets=true`, field `data`.
    fn block_document_by_id(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;

    /// `GET /variables/name/{name}`, field `value`.
    fn variable(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
}

// ---------------------------------------------------------------------------------------------
// Finding placeholders

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn is_py_space(c: char) -> bool {
    in_table(py_unicode::SPACE, c)
}

/// Characters of the name class `[\w\.\-\[\]$]`.
fn is_name_char(c: char) -> bool {
    matches!(c, '.' | '-' | '[' | ']' | '$') || in_table(py_unicode::WORD, c)
}

/// One regex match: byte ranges of the whole placeholder and of its name.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    name_start: usize,
    name_end: usize,
}

/// Tries `{{\s*([\w\.\-\[\]$]+)\s*}}` at byte `start`. The three inner classes are disjoint,
/// so the greedy match without backtracking is the regex's only possible match.
fn match_at(s: &str, start: usize) -> Option<Match> {
    if !s.get(start..)?.starts_with("{{") {
        return None;
    }
    let name_start = skip_while(s, start + 2, is_py_space);
    let name_end = skip_while(s, name_start, is_name_char);
    if name_end == name_start {
        return None;
    }
    let close = skip_while(s, name_end, is_py_space);
    s[close..].starts_with("}}").then_some(Match {
        start,
        end: close + 2,
        name_start,
        name_end,
    })
}

/// The byte index after the run of characters matching `pred` that starts at byte `from`.
fn skip_while(s: &str, from: usize, pred: fn(char) -> bool) -> usize {
    from + s[from..]
        .chars()
        .take_while(|&c| pred(c))
        .map(char::len_utf8)
        .sum::<usize>()
}

/// All non-overlapping matches, leftmost first, as Python's `re.findall` / `re.sub` see them.
fn scan(s: &str) -> Vec<Match> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(off) = s.get(from..).and_then(|rest| rest.find("{{")) {
        let at = from + off;
        match match_at(s, at) {
            Some(m) => {
                from = m.end;
                out.push(m);
            }
            // `{` is one byte, so `at + 1` is a character boundary.
            None => from = at + 1,
        }
    }
    out
}

/// The distinct placeholders of one string, in order of first appearance.
pub(crate) fn find_placeholders_in_str(s: &str) -> Vec<Placeholder> {
    let mut out: Vec<Placeholder> = Vec::new();
    for m in scan(s) {
        let name = &s[m.name_start..m.name_end];
        let p = Placeholder {
            full_match: s[m.start..m.end].to_owned(),
            name: name.to_owned(),
            kind: PlaceholderKind::of(name),
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// All placeholders in a template: strings, and the values (not keys) of objects and arrays.
///
/// Prefect returns a set; this returns each distinct placeholder once, in order of appearance.
pub fn find_placeholders(template: &Value) -> Vec<Placeholder> {
    fn walk(v: &Value, out: &mut Vec<Placeholder>) {
        match v {
            Value::String(s) => {
                for p in find_placeholders_in_str(s) {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            Value::Object(map) => map.values().for_each(|item| walk(item, out)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(template, &mut out);
    out
}

/// The single placeholder that makes up all of `s`, if there is exactly one distinct placeholder
/// and it is the whole string (Python's `len(placeholders) == 1 and full_match == template`).
fn whole_placeholder<'p>(s: &str, placeholders: &'p [Placeholder]) -> Option<&'p Placeholder> {
    match placeholders {
        [only] if only.full_match == s => Some(only),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Looking up dotted paths (Python's `get_from_dict`)

/// Python's `int(text)` for the text of one path segment, or `None` where `int()` raises.
///
/// A segment can only hold name characters, so there is no whitespace or `+` to handle; `int()`
/// still accepts a `-` sign, `_` between digits and every Unicode decimal digit. Values beyond
/// `i128` saturate: they are out of range of any list either way.
fn py_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut value: i128 = 0;
    let mut previous_was_digit = false;
    for c in digits.chars() {
        if c == '_' {
            if !previous_was_digit {
                return None;
            }
            previous_was_digit = false;
            continue;
        }
        let digit = decimal_value(c)?;
        value = value.saturating_mul(10).saturating_add(i128::from(digit));
        previous_was_digit = true;
    }
    if !previous_was_digit {
        // Empty, or ends with `_`.
        return None;
    }
    Some(if negative { -value } else { value })
}

fn decimal_value(c: char) -> Option<u32> {
    let cp = c as u32;
    let zeros = py_unicode::DECIMAL_ZEROS;
    let idx = zeros.partition_point(|&z| z <= cp);
    let zero = *zeros.get(idx.checked_sub(1)?)?;
    (cp - zero < 10).then_some(cp - zero)
}

/// Python's `seq[index]` with negative indexes counting from the end.
fn py_index(len: usize, index: i128) -> Option<usize> {
    let len = i128::try_from(len).ok()?;
    let index = if index < 0 { index + len } else { index };
    (0..len)
        .contains(&index)
        .then(|| usize::try_from(index).ok())
        .flatten()
}

/// Where a path walk currently stands. Indexing a string yields a one-character string that
/// exists nowhere in the input, hence the owned variant.
enum Node<'a> {
    Map(&'a Map<String, Value>),
    Value(&'a Value),
    Char(char),
}

fn step<'a>(node: Node<'a>, key: &str) -> Option<Node<'a>> {
    match node {
        // JSON objects have string keys only, so Python's fallback to an integer key never hits.
        Node::Map(map) | Node::Value(Value::Object(map)) => map.get(key).map(Node::Value),
        Node::Value(Value::Array(items)) => items
            .get(py_index(items.len(), py_int(key)?)?)
            .map(Node::Value),
        Node::Value(Value::String(s)) => {
            let len = s.chars().count();
            s.chars().nth(py_index(len, py_int(key)?)?).map(Node::Char)
        }
        Node::Char(c) => {
            py_index(1, py_int(key)?)?;
            Some(Node::Char(c))
        }
        // `True[0]`, `None[0]`, `1.5[0]`: TypeError, which `get_from_dict` turns into the default.
        Node::Value(Value::Null | Value::Bool(_) | Value::Number(_)) => None,
    }
}

fn get_path(root: Node<'_>, path: &str) -> Option<Value> {
    let path = path.replace('[', ".").replace(']', "");
    let mut node = root;
    for key in path.split('.') {
        node = step(node, key)?;
    }
    Some(match node {
        Node::Map(map) => Value::Object(map.clone()),
        Node::Value(v) => v.clone(),
        Node::Char(c) => Value::String(c.to_string()),
    })
}

/// Python's `get_from_dict(values, "a.b[0]")`: `None` where Prefect gets its default.
pub fn get_from_dict(values: &Map<String, Value>, path: &str) -> Option<Value> {
    get_path(Node::Map(values), path)
}

// ---------------------------------------------------------------------------------------------
// apply_values

/// Fills standard and `$ENV` placeholders in `template` (Python's `apply_values` with
/// `remove_notset=True`). `None` is Prefect's `NotSet`: the template was exactly one missing
/// standard placeholder, and the caller drops it.
///
/// Block and variable placeholders are left for the later passes. `env` reads the worker's
/// environment; a missing variable renders as `""`.
pub fn apply_values(
    template: &Value,
    values: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Value> {
    match template {
        Value::Null | Value::Bool(_) | Value::Number(_) => Some(template.clone()),
        Value::String(s) => apply_to_string(s, values, env),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), apply_values(v, values, env)?)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|v| apply_values(v, values, env))
                .collect(),
        )),
    }
}

fn apply_to_string(
    s: &str,
    values: &Map<String, Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Value> {
    let placeholders = find_placeholders_in_str(s);
    if placeholders.is_empty() {
        return Some(Value::String(s.to_owned()));
    }
    if let Some(p) = whole_placeholder(s, &placeholders) {
        if p.kind == PlaceholderKind::Standard {
            return get_from_dict(values, &p.name);
        }
    }
    let mut replacements: HashMap<&str, String> = HashMap::new();
    for p in &placeholders {
        let text = match p.kind {
            PlaceholderKind::Standard => get_from_dict(values, &p.name)
                .map(|v| python_str(&v))
                .unwrap_or_default(),
            PlaceholderKind::EnvVar => env(p.name.trim_start_matches('$')).unwrap_or_default(),
            PlaceholderKind::BlockDocument | PlaceholderKind::Variable => continue,
        };
        replacements.insert(&p.full_match, text);
    }
    // One pass over the original string: inserted text is never itself templated.
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for m in scan(s) {
        out.push_str(&s[last..m.start]);
        let full = &s[m.start..m.end];
        out.push_str(replacements.get(full).map_or(full, String::as_str));
        last = m.end;
    }
    out.push_str(&s[last..]);
    Some(Value::String(out))
}

// ---------------------------------------------------------------------------------------------
// Python str() and repr()

/// Python's `str()` of a JSON value as Prefect holds it after `json.loads`: a string is itself,
/// everything else is its `repr()` (`True`, `None`, `1e-05`, `{'a': [1, 'x']}`).
///
/// JSON integers are Python `int`s and JSON numbers with a fraction or exponent are `float`s, so
/// `1.0` prints as `1.0`. Integers beyond 64 bits reach Rust as floats (serde_json's limit) and
/// print as floats, unlike Python.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let mut out = String::new();
            python_repr(other, &mut out);
            out
        }
    }
}

fn python_repr(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&python_float_repr(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Value::String(s) => python_str_repr(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_str_repr(k, out);
                out.push_str(": ");
                python_repr(item, out);
            }
            out.push('}');
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip (Rust's `{:e}` finds the same
/// digits), in positional notation for exponents -4..16 and scientific otherwise.
pub(crate) fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let ndigits = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    // Python's `decpt`: the value is 0.<digits> x 10^decpt.
    let decpt = exp + 1;
    let mut out = String::new();
    if f < 0.0 {
        out.push('-');
    }
    if (-4 < decpt) && (decpt <= 16) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
            out.push_str(&digits);
        } else if decpt >= ndigits {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', (decpt - ndigits) as usize));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(decpt as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    out
}

/// Python's `repr(str)`: single quotes unless the text has `'` and no `"`; backslash escapes for
/// the quote, `\\`, `\t`, `\n`, `\r`, and `\xNN`/`\uNNNN`/`\UNNNNNNNN` for what is not printable.
pub(crate) fn python_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            c if c == quote || c == '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) < 0x7f => out.push(c),
            c if in_table(py_unicode::PRINTABLE, c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// Python's truthiness of a JSON value (`if value:`).
pub(crate) fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Python's type name of a JSON value, for error messages.
pub(crate) fn py_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

// ---------------------------------------------------------------------------------------------
// Block documents

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Block documents read so far in one resolution pass: Prefect reads each one once.
struct BlockCache<'s, S> {
    source: &'s S,
    by_name: HashMap<(String, String), Value>,
    by_id: HashMap<String, Value>,
}

impl<S: TemplateSource> BlockCache<'_, S> {
    async fn by_name(&mut self, slug: &str, name: &str) -> Result<Value, TemplatingError> {
        let key = (slug.to_owned(), name.to_owned());
        if let Some(data) = self.by_name.get(&key) {
            return Ok(data.clone());
        }
        let data = self
            .source
            .block_document_by_slug_and_name(slug, name)
            .await
            .map_err(|source| TemplatingError::Source {
                what: format!("reading block '{name}' of type '{slug}' failed"),
                source,
            })?
            .ok_or_else(|| TemplatingError::BlockNotFound {
                slug: slug.into(),
                name: name.into(),
            })?;
        self.by_name.insert(key, data.clone());
        Ok(data)
    }

    async fn by_id(&mut self, id: &str) -> Result<Value, TemplatingError> {
        if let Some(data) = self.by_id.get(id) {
            return Ok(data.clone());
        }
        let data = self
            .source
            .block_document_by_id(id)
            .await
            .map_err(|source| TemplatingError::Source {
                what: format!("reading block document '{id}' failed"),
                source,
            })?
            .ok_or_else(|| TemplatingError::BlockIdNotFound { id: id.into() })?;
        self.by_id.insert(id.to_owned(), data.clone());
        Ok(data)
    }

    /// The value one block placeholder stands for (Python's `_resolve_single_placeholder`).
    async fn placeholder_value(
        &mut self,
        placeholder: &Placeholder,
    ) -> Result<Value, TemplatingError> {
        // Python removes the prefix with `str.replace`, i.e. everywhere in the name.
        let rest = placeholder.name.replace(BLOCK_PREFIX, "");
        let mut parts = rest.splitn(3, '.');
        let (Some(slug), Some(name)) = (parts.next(), parts.next()) else {
            return Err(TemplatingError::InvalidBlockPlaceholder {
                placeholder: placeholder.name.clone(),
            });
        };
        let key_path = parts.next();
        let data = self.by_name(slug, name).await?;
        // System blocks (Secret, JSON, String) hold one field, `value`, which is resolved by
        // default, unless the path already starts at `value` (but `values.x` is inside it).
        let data = match &data {
            Value::Object(map) if map.len() == 1 && map.contains_key("value") => {
                let points_at_value = key_path.is_some_and(|p| {
                    p == "value" || p.starts_with("value.") || p.starts_with("value[")
                });
                if points_at_value {
                    data
                } else {
                    map.get("value").cloned().unwrap_or(Value::Null)
                }
            }
            _ => data,
        };
        match key_path {
            None => Ok(data),
            Some(path) => get_path(Node::Value(&data), path).ok_or_else(|| {
                TemplatingError::BlockKeyPathNotFound {
                    placeholder: placeholder.full_match.clone(),
                    slug: slug.to_owned(),
                    name: name.to_owned(),
                    key_path: path.to_owned(),
                }
            }),
        }
    }

    fn resolve<'a>(&'a mut self, template: Value) -> BoxFuture<'a, Result<Value, TemplatingError>>
    where
        S: 'a,
    {
        Box::pin(async move {
            match template {
                Value::Object(map) => {
                    if let Some(reference) = map.get("$ref") {
                        let Value::Object(reference) = reference else {
                            return Err(TemplatingError::InvalidBlockReference {
                                found: py_type_name(reference),
                            });
                        };
                        if let Some(id) =
                            reference.get("block_document_id").filter(|v| py_truthy(v))
                        {
                            return self.by_id(&python_str(id)).await;
                        }
                    }
                    let mut out = Map::with_capacity(map.len());
                    for (k, v) in map {
                        let v = self.resolve(v).await?;
                        out.insert(k, v);
                    }
                    Ok(Value::Object(out))
                }
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for v in items {
                        out.push(self.resolve(v).await?);
                    }
                    Ok(Value::Array(out))
                }
                Value::String(s) => self.resolve_string(s).await,
                other => Ok(other),
            }
        })
    }

    async fn resolve_string(&mut self, s: String) -> Result<Value, TemplatingError> {
        let placeholders = find_placeholders_in_str(&s);
        if !placeholders
            .iter()
            .any(|p| p.kind == PlaceholderKind::BlockDocument)
        {
            return Ok(Value::String(s));
        }
        if let Some(p) = whole_placeholder(&s, &placeholders) {
            // Only a block placeholder reaches here: the `any` above saw one.
            return self.placeholder_value(p).await;
        }
        // Inline: each block placeholder becomes `str()` of its value; others stay for later.
        let mut result = s.clone();
        for p in placeholders
            .iter()
            .filter(|p| p.kind == PlaceholderKind::BlockDocument)
        {
            let value = self.placeholder_value(p).await?;
            let kind = match value {
                Value::Object(_) => Some("dict"),
                Value::Array(_) => Some("list"),
                _ => None,
            };
            if let Some(kind) = kind {
                return Err(TemplatingError::InlineBlockNotScalar {
                    placeholder: p.full_match.clone(),
                    kind,
                });
            }
            result = result.replace(&p.full_match, &python_str(&value));
        }
        Ok(Value::String(result))
    }
}

/// Replaces block references with block data (Python's `resolve_block_document_references`).
///
/// - `{"$ref": {"block_document_id": "<id>"}}` (any object with such a truthy `$ref`) becomes
///   the block's `data`.
/// - `"{{ prefect.blocks.<slug>.<name> }}"` becomes the block's data, or its `value` field for
///   single-field system blocks such as Secret and JSON; `.<path>` selects inside it.
/// - Embedded in text, the value is written with [`python_str`]; an object or array there is an
///   error.
///
/// A block that does not exist is an error, as it crashes the flow run in Prefect.
pub async fn resolve_block_document_references<S: TemplateSource>(
    template: Value,
    source: &S,
) -> Result<Value, TemplatingError> {
    let mut cache = BlockCache {
        source,
        by_name: HashMap::new(),
        by_id: HashMap::new(),
    };
    cache.resolve(template).await
}

// ---------------------------------------------------------------------------------------------
// Variables

struct VariableCache<'s, S> {
    source: &'s S,
    values: HashMap<String, Option<Value>>,
}

impl<S: TemplateSource> VariableCache<'_, S> {
    async fn read(&mut self, placeholder_name: &str) -> Result<Option<Value>, TemplatingError> {
        // As in Prefect, the prefix is removed everywhere in the name.
        let name = placeholder_name.replace(VARIABLE_PREFIX, "");
        if let Some(value) = self.values.get(&name) {
            return Ok(value.clone());
        }
        let value =
            self.source
                .variable(&name)
                .await
                .map_err(|source| TemplatingError::Source {
                    what: format!("reading variable '{name}' failed"),
                    source,
                })?;
        self.values.insert(name, value.clone());
        Ok(value)
    }

    fn resolve<'a>(&'a mut self, template: Value) -> BoxFuture<'a, Result<Value, TemplatingError>>
    where
        S: 'a,
    {
        Box::pin(async move {
            match template {
                Value::String(s) => self.resolve_string(s).await,
                Value::Object(map) => {
                    let mut out = Map::with_capacity(map.len());
                    for (k, v) in map {
                        let v = self.resolve(v).await?;
                        out.insert(k, v);
                    }
                    Ok(Value::Object(out))
                }
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for v in items {
                        out.push(self.resolve(v).await?);
                    }
                    Ok(Value::Array(out))
                }
                other => Ok(other),
            }
        })
    }

    async fn resolve_string(&mut self, s: String) -> Result<Value, TemplatingError> {
        let placeholders = find_placeholders_in_str(&s);
        if !placeholders
            .iter()
            .any(|p| p.kind == PlaceholderKind::Variable)
        {
            return Ok(Value::String(s));
        }
        if let Some(p) = whole_placeholder(&s, &placeholders) {
            let value = self.read(&p.name).await?;
            return Ok(value.unwrap_or_else(|| Value::String(String::new())));
        }
        let mut result = s;
        for p in placeholders
            .iter()
            .filter(|p| p.kind == PlaceholderKind::Variable)
        {
            let text = self
                .read(&p.name)
                .await?
                .map(|v| python_str(&v))
                .unwrap_or_default();
            result = result.replace(&p.full_match, &text);
        }
        Ok(Value::String(result))
    }
}

/// Fills `{{ prefect.variables.<name> }}` placeholders (Python's `resolve_variables`).
///
/// A whole-string placeholder becomes the variable's typed value, an embedded one its
/// [`python_str`]; a variable that does not exist becomes `""` in both cases.
pub async fn resolve_variables<S: TemplateSource>(
    template: Value,
    source: &S,
) -> Result<Value, TemplatingError> {
    let mut cache = VariableCache {
        source,
        values: HashMap::new(),
    };
    cache.resolve(template).await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// An in-memory [`TemplateSource`] that records every read, to check what is fetched.
    #[derive(Default)]
    pub(crate) struct FakeSource {
        pub(crate) blocks: HashMap<(String, String), Value>,
        pub(crate) blocks_by_id: HashMap<String, Value>,
        pub(crate) variables: HashMap<String, Value>,
        pub(crate) reads: Mutex<Vec<String>>,
    }

    impl FakeSource {
        pub(crate) fn with_block(mut self, slug: &str, name: &str, data: Value) -> Self {
            self.blocks.insert((slug.into(), name.into()), data);
            self
        }

        pub(crate) fn with_variable(mut self, name: &str, value: Value) -> Self {
            self.variables.insert(name.into(), value);
            self
        }

        fn log(&self, what: String) {
            self.reads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(what);
        }

        pub(crate) fn reads(&self) -> Vec<String> {
            self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }

    impl TemplateSource for FakeSource {
        async fn block_document_by_slug_and_name(
            &self,
            slug: &str,
            name: &str,
        ) -> Result<Option<Value>, SourceError> {
            self.log(format!("block {slug}/{name}"));
            Ok(self
                .blocks
                .get(&(slug.to_owned(), name.to_owned()))
                .cloned())
        }

        async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, SourceError> {
            self.log(format!("block id {id}"));
            Ok(self.blocks_by_id.get(id).cloned())
        }

        async fn variable(&self, name: &str) -> Result<Option<Value>, SourceError> {
            self.log(format!("variable {name}"));
            if name == "broken" {
                return Err(SourceError::new("HTTP 500"));
            }
            Ok(self.variables.get(name).cloned())
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn values(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test values must be an object"),
        }
    }

    fn apply(template: Value, vals: Value) -> Option<Value> {
        apply_values(&template, &values(vals), &no_env)
    }

    fn names(s: &str) -> Vec<String> {
        find_placeholders(&json!(s))
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn placeholder_syntax_follows_pythons_regex() {
        assert_eq!(names("{{a}} {{ b }} {{\tc\n}}"), ["a", "b", "c"]);
        // Python's `\s` includes the file separators and U+3000; U+200B is not a space.
        assert_eq!(names("{{\u{1c}d\u{3000}}}"), ["d"]);
        assert!(names("{{\u{200b}e }}").is_empty());
        assert_eq!(names("{{ a.b[0].c-d$ }}"), ["a.b[0].c-d$"]);
        assert!(names("{{ }} {{ a b }} { {a}} {a}").is_empty());
        // Leftmost match after a failed start: `{{{ a }}` holds `{{ a }}`.
        assert_eq!(
            find_placeholders(&json!("{{{ a }}"))[0].full_match,
            "{{ a }}"
        );
        // Python's `\w` is Unicode, but not every Rust alphanumeric: U+0345 is a mark.
        assert_eq!(names("{{ ñame }} {{ 名前 }}"), ["ñame", "名前"]);
        assert!(names("{{ a\u{345} }}").is_empty());
    }

    #[test]
    fn placeholders_are_classified_by_prefix_and_deduplicated() {
        let found = find_placeholders(&json!({
            "{{ key }}": ["{{ a }}", "{{ $HOME }}", 1, null],
            "x": {"y": "{{ prefect.blocks.secret.s }} {{ prefect.variables.v }} {{ a }}"}
        }));
        let kinds: Vec<(&str, PlaceholderKind)> =
            found.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        // Keys are not templates, and `{{ a }}` appears once.
        assert_eq!(
            kinds,
            [
                ("a", PlaceholderKind::Standard),
                ("$HOME", PlaceholderKind::EnvVar),
                ("prefect.blocks.secret.s", PlaceholderKind::BlockDocument),
                ("prefect.variables.v", PlaceholderKind::Variable),
            ]
        );
    }

    #[test]
    fn whole_placeholder_keeps_the_type() {
        let vals = json!({"cpu": 2, "mem": 1.0, "d": {"a": [1]}, "n": null, "f": false});
        assert_eq!(apply(json!("{{ cpu }}"), vals.clone()), Some(json!(2)));
        assert_eq!(apply(json!("{{mem}}"), vals.clone()), Some(json!(1.0)));
        assert_eq!(
            apply(json!("{{ d }}"), vals.clone()),
            Some(json!({"a": [1]}))
        );
        // A null value is a value: the key stays.
        assert_eq!(
            apply(json!({"k": "{{ n }}"}), vals.clone()),
            Some(json!({"k": null}))
        );
        assert_eq!(apply(json!("{{ f }}"), vals), Some(json!(false)));
    }

    #[test]
    fn missing_whole_placeholder_removes_the_key_or_item() {
        let t = json!({"keep": "{{ a }}", "drop": "{{ missing }}", "list": ["{{ missing }}", "{{ a }}"]});
        assert_eq!(
            apply(t, json!({"a": "A"})),
            Some(json!({"keep": "A", "list": ["A"]}))
        );
        assert_eq!(apply(json!("{{ missing }}"), json!({})), None);
    }

    #[test]
    fn embedded_placeholders_use_python_str() {
        let vals = json!({"cpu": 2, "f": true, "n": null, "d": {"a": 1, "b": [1, 2]}, "l": [1, "x"], "x": 1e-05});
        assert_eq!(
            apply(
                json!("{{ cpu }}/{{ f }}/{{ n }}/{{ d }}/{{ l }}/{{ x }}"),
                vals
            ),
            Some(json!("2/True/None/{'a': 1, 'b': [1, 2]}/[1, 'x']/1e-05"))
        );
        assert_eq!(
            apply(json!("x-{{ not_defined }}-y"), json!({})),
            Some(json!("x--y"))
        );
        // The same placeholder twice is not "whole", so it is text.
        assert_eq!(
            apply(json!("{{ cpu }}{{ cpu }}"), json!({"cpu": 2})),
            Some(json!("22"))
        );
        // A leading space makes it embedded too.
        assert_eq!(
            apply(json!(" {{ cpu }}"), json!({"cpu": 2})),
            Some(json!(" 2"))
        );
    }

    #[test]
    fn substitution_is_a_single_pass() {
        let vals = json!({"a": "{{ b }}", "b": "B"});
        assert_eq!(
            apply(json!("{{ a }}!"), vals.clone()),
            Some(json!("{{ b }}!"))
        );
        assert_eq!(apply(json!("{{ a }}"), vals), Some(json!("{{ b }}")));
    }

    #[test]
    fn env_placeholders_read_the_environment() {
        let env = |name: &str| (name == "HOME").then(|| "/root".to_owned());
        let t = json!([
            "{{ $HOME }}",
            "{{ $HOME }}/x",
            "{{ $NOPE }}",
            "a{{ $NOPE }}b",
            "{{ $$HOME }}"
        ]);
        assert_eq!(
            apply_values(&t, &Map::new(), &env),
            // Whole or not, a missing variable is "" (never NotSet), and all `$` are stripped.
            Some(json!(["/root", "/root/x", "", "ab", "/root"]))
        );
    }

    #[test]
    fn blocks_and_variables_are_left_for_later_passes() {
        let t = json!([
            "{{ prefect.blocks.secret.s }}",
            "{{ prefect.variables.v }} {{ a }}"
        ]);
        assert_eq!(
            apply(t, json!({"a": 1})),
            Some(json!([
                "{{ prefect.blocks.secret.s }}",
                "{{ prefect.variables.v }} 1"
            ]))
        );
    }

    #[test]
    fn scalars_pass_through() {
        for v in [
            json!(null),
            json!(true),
            json!(3),
            json!(2.5),
            json!("plain"),
        ] {
            assert_eq!(apply(v.clone(), json!({})), Some(v));
        }
    }

    #[test]
    fn dotted_and_indexed_paths() {
        let vals = values(json!({
            "nested": {"k": {"j": "deep"}, "2026": "year"},
            "arr": [{"x": 10}, "one", 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            "s": "héllo",
            "n": 5,
        }));
        let get = |path: &str| get_from_dict(&vals, path);
        assert_eq!(get("nested.k.j"), Some(json!("deep")));
        assert_eq!(get("nested.2026"), Some(json!("year")));
        assert_eq!(get("arr[0].x"), Some(json!(10)));
        assert_eq!(get("arr.0.x"), Some(json!(10)));
        assert_eq!(get("arr[-1]"), Some(json!(11)));
        assert_eq!(get("arr[-12].x"), Some(json!(10)));
        assert_eq!(get("arr[-13]"), None);
        // `int()` accepts `_` between digits and any Unicode decimal digit.
        assert_eq!(get("arr[1_0]"), Some(json!(10)));
        assert_eq!(get("arr[\u{661}]"), Some(json!("one")));
        assert_eq!(get("arr[_1]"), None);
        assert_eq!(get("arr[1_]"), None);
        // Strings are indexable by code point; other scalars are not.
        assert_eq!(get("s[1]"), Some(json!("é")));
        assert_eq!(get("s.-1.0"), Some(json!("o")));
        assert_eq!(get("n.0"), None);
        assert_eq!(get("nested.missing"), None);
        assert_eq!(get("a..b"), None);
        assert_eq!(get("arr[99999999999999999999999999999999999999999]"), None);
    }

    #[test]
    fn python_str_of_scalars() {
        let cases = [
            (json!(true), "True"),
            (json!(false), "False"),
            (json!(null), "None"),
            (json!(-7), "-7"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(1.0), "1.0"),
            (json!(2.5), "2.5"),
            (json!(-0.0), "-0.0"),
            (json!(1e-05), "1e-05"),
            (json!(0.0001), "0.0001"),
            (json!(1e15), "1000000000000000.0"),
            (json!(1e16), "1e+16"),
            (json!(1.5e300), "1.5e+300"),
            (json!(5e-324), "5e-324"),
            (json!(0.1 + 0.2), "0.30000000000000004"),
            (json!("text"), "text"),
        ];
        for (v, want) in cases {
            assert_eq!(python_str(&v), want, "str({v})");
        }
        assert_eq!(python_float_repr(f64::INFINITY), "inf");
        assert_eq!(python_float_repr(f64::NEG_INFINITY), "-inf");
        assert_eq!(python_float_repr(f64::NAN), "nan");
    }

    #[test]
    fn python_str_of_containers_uses_repr() {
        assert_eq!(
            python_str(&json!({"a": 1, "b": [1, 2]})),
            "{'a': 1, 'b': [1, 2]}"
        );
        assert_eq!(python_str(&json!([])), "[]");
        assert_eq!(python_str(&json!({})), "{}");
        assert_eq!(
            python_str(&json!([null, true, 1.0, "x"])),
            "[None, True, 1.0, 'x']"
        );
        // Quote choice: double quotes only when the text has ' and no ".
        assert_eq!(python_str(&json!(["it's"])), r#"["it's"]"#);
        assert_eq!(python_str(&json!(["say \"hi\""])), r#"['say "hi"']"#);
        assert_eq!(python_str(&json!(["it's \"x\""])), r#"['it\'s "x"']"#);
        assert_eq!(python_str(&json!(["a\\b"])), r"['a\\b']");
    }

    #[test]
    fn repr_escapes_what_python_does_not_print() {
        let s = "\t\n\r\u{0}\u{7f}\u{a0}\u{ad}é名😀\u{200b}\u{2028}\u{e000}\u{e0001}";
        assert_eq!(
            python_str(&json!([s])),
            r"['\t\n\r\x00\x7f\xa0\xadé名😀\u200b\u2028\ue000\U000e0001']"
        );
    }

    fn block_source() -> FakeSource {
        FakeSource::default()
            .with_block("secret", "s", json!({"value": "s3cr3t"}))
            .with_block(
                "json",
                "j",
                json!({"value": {"key": {"n": "v"}, "list": [{"lk": "lv"}, 1]}}),
            )
            .with_block("json", "l", json!({"value": [1, 2]}))
            .with_block(
                "multi",
                "m",
                json!({"url": "https://x", "port": 1, "values": ["v0"]}),
            )
    }

    async fn blocks(t: Value, source: &FakeSource) -> Result<Value, TemplatingError> {
        resolve_block_document_references(t, source).await
    }

    #[tokio::test]
    async fn whole_block_placeholder_resolves_to_the_value() {
        let source = block_source();
        let t = json!({
            "secret": "{{ prefect.blocks.secret.s }}",
            "dict": "{{ prefect.blocks.json.j }}",
            "path": "{{ prefect.blocks.json.j.key.n }}",
            "value_path": "{{ prefect.blocks.json.j.value.list[0].lk }}",
            "multi": "{{ prefect.blocks.multi.m }}",
            "field": "{{ prefect.blocks.multi.m.port }}",
        });
        assert_eq!(
            blocks(t, &source).await.ok(),
            Some(json!({
                "secret": "s3cr3t",
                "dict": {"key": {"n": "v"}, "list": [{"lk": "lv"}, 1]},
                "path": "v",
                "value_path": "lv",
                "multi": {"url": "https://x", "port": 1, "values": ["v0"]},
                "field": 1,
            }))
        );
        // Each block document is read once per pass.
        assert_eq!(
            source.reads(),
            ["block secret/s", "block json/j", "block multi/m"]
        );
    }

    #[tokio::test]
    async fn inline_block_placeholders_are_text_and_must_be_scalars() {
        let source = block_source();
        let t = json!("{{ prefect.blocks.multi.m.url }}:{{ prefect.blocks.multi.m.port }} {{ a }}");
        assert_eq!(
            blocks(t, &source).await.ok(),
            Some(json!("https://x:1 {{ a }}"))
        );
        let err = blocks(json!("x {{ prefect.blocks.json.l }}"), &source).await;
        assert!(
            matches!(
                err,
                Err(TemplatingError::InlineBlockNotScalar { kind: "list", .. })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn block_errors_are_specific() {
        let source = block_source();
        let missing = blocks(json!("{{ prefect.blocks.secret.gone }}"), &source).await;
        assert!(
            matches!(&missing, Err(TemplatingError::BlockNotFound { slug, name }) if slug == "secret" && name == "gone"),
            "{missing:?}"
        );
        let bad = blocks(json!("{{ prefect.blocks.secret }}"), &source).await;
        assert!(
            matches!(bad, Err(TemplatingError::InvalidBlockPlaceholder { .. })),
            "{bad:?}"
        );
        let path = blocks(json!("{{ prefect.blocks.multi.m.nope }}"), &source).await;
        assert!(
            matches!(path, Err(TemplatingError::BlockKeyPathNotFound { .. })),
            "{path:?}"
        );
        let reference = blocks(json!({"$ref": "#/definitions/x"}), &source).await;
        assert!(
            matches!(
                reference,
                Err(TemplatingError::InvalidBlockReference { found: "str" })
            ),
            "{reference:?}"
        );
        // The message names the block and says what to do, and never holds block data.
        let message = missing.map(|_| ()).unwrap_err().to_string();
        assert!(
            message.contains("'gone' of type 'secret'") && !message.contains("s3cr3t"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn ref_objects_become_block_data() {
        let mut source = block_source();
        source
            .blocks_by_id
            .insert("id-1".into(), json!({"client_id": "c"}));
        let t = json!({"creds": {"$ref": {"block_document_id": "id-1"}, "ignored": 1}, "empty": {"$ref": {"block_document_id": ""}}});
        assert_eq!(
            blocks(t, &source).await.ok(),
            Some(
                json!({"creds": {"client_id": "c"}, "empty": {"$ref": {"block_document_id": ""}}})
            )
        );
        let gone = blocks(json!({"$ref": {"block_document_id": "id-2"}}), &source).await;
        assert!(
            matches!(gone, Err(TemplatingError::BlockIdNotFound { .. })),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn variables_resolve_typed_or_as_text() {
        let source = FakeSource::default()
            .with_variable("n", json!(7))
            .with_variable("d", json!({"k": [1, "v"]}));
        let t = json!({
            "whole": "{{ prefect.variables.n }}",
            "text": "n={{ prefect.variables.n }} d={{ prefect.variables.d }} m={{ prefect.variables.m }}",
            "missing": "{{ prefect.variables.m }}",
            "other": "{{ a }} {{ prefect.blocks.x.y }}",
        });
        assert_eq!(
            resolve_variables(t, &source).await.ok(),
            Some(json!({
                "whole": 7,
                "text": "n=7 d={'k': [1, 'v']} m=",
                "missing": "",
                "other": "{{ a }} {{ prefect.blocks.x.y }}",
            }))
        );
        assert_eq!(source.reads(), ["variable n", "variable d", "variable m"]);
    }

    #[tokio::test]
    async fn a_failing_source_is_an_error_not_a_missing_value() {
        let source = FakeSource::default();
        let err = resolve_variables(json!("{{ prefect.variables.broken }}"), &source).await;
        assert!(
            matches!(err, Err(TemplatingError::Source { .. })),
            "{err:?}"
        );
    }
}
