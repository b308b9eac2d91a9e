//! How a recipe error is reported: one line naming the file and the dotted key. TOML syntax
//! errors name their line and column; serde's type, missing-key and unknown-key messages are
//! reworded to say what was expected and what was found; [`Check`] names the key of a value out
//! of range.

use serde::de::DeserializeOwned;

/// A recipe error: the file, the dotted key when there is one, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {}{msg}", key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default())]
pub struct RecipeError {
    pub file: String,
    pub key: Option<String>,
    pub msg: String,
}

impl RecipeError {
    pub fn new(file: &str, key: Option<&str>, msg: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            key: key.map(str::to_string),
            msg: msg.into(),
        }
    }
}

/// TOML text to a table; a syntax error names its line and column.
pub fn parse_table(file: &str, text: &str) -> Result<toml::Table, RecipeError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {col}: ")
            })
            .unwrap_or_default();
        RecipeError::new(
            file,
            None,
            format!("invalid TOML: {at}{}", one_line(e.message())),
        )
    })
}

/// Deserialises a typed section from a table, turning serde's message into one naming the key.
pub fn from_table<T: DeserializeOwned>(file: &str, table: toml::Table) -> Result<T, RecipeError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let (key, msg) = explain(&path, &e.inner().to_string());
        RecipeError::new(file, key.as_deref(), msg)
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// serde's wording ("invalid type: string \"eight\", expected usize") to ours
/// ("expected an integer, found \"eight\""), with the key the message is about.
fn explain(path: &str, msg: &str) -> (Option<String>, String) {
    let mut msg = one_line(msg);
    // toml appends where it was (" in `train.batch_size`", " in optimizer"); the key says it.
    if let Some(i) = msg.rfind(" in ") {
        let tail = &msg[i + 4..];
        if !tail.trim_matches('`').contains([' ', ',']) {
            msg.truncate(i);
        }
    }
    let key = (!path.is_empty()).then(|| path.to_string());
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        return (Some(join(path, name)), "missing".into());
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        // The path may already end at the unknown key.
        let path = match path.rsplit_once('.') {
            Some((parent, last)) if last == name => parent,
            None if path == name => "",
            _ => path,
        };
        let expected = rest
            .split_once("expected one of ")
            .map(|(_, list)| format!(" (expected one of {})", list.replace('`', "")))
            .or_else(|| {
                rest.split_once("expected ")
                    .map(|(_, one)| format!(" (expected {})", one.replace('`', "")))
            })
            .unwrap_or_default();
        return (Some(join(path, name)), format!("unknown key{expected}"));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .split_once("expected one of ")
            .map(|(_, list)| format!(" (expected one of {})", list.replace('`', "")))
            .or_else(|| {
                tail.split_once("expected ")
                    .map(|(_, one)| format!(" (expected {})", one.replace('`', "")))
            })
            .unwrap_or_default();
        return (key, format!("unknown value \"{value}\"{expected}"));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                // An enum key given a number: serde cannot say what was found.
                if expected == "string only" {
                    return (key, "expected a string".into());
                }
                return (
                    key,
                    format!(
                        "expected {}, found {}",
                        describe_expected(expected),
                        describe_found(found)
                    ),
                );
            }
        }
    }
    (key, msg)
}

fn describe_expected(e: &str) -> String {
    match e {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".into(),
        "i64" | "i32" | "isize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" => "a string".into(),
        "a sequence" => "a list".into(),
        _ if e.starts_with("struct ") => "a table".into(),
        _ if e.starts_with("an array of length ") => format!("a list of {}", &e[19..]),
        _ => e.to_string(),
    }
}

fn describe_found(f: &str) -> String {
    let ticked = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = f.strip_prefix("string ") {
        return s.to_string();
    }
    for p in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = f.strip_prefix(p) {
            return ticked(v);
        }
    }
    match f {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        _ => f.to_string(),
    }
}

pub(super) fn describe_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Range checks that types cannot express; each names its key.
pub struct Check<'a> {
    file: &'a str,
}

impl<'a> Check<'a> {
    pub fn new(file: &'a str) -> Self {
        Self { file }
    }

    pub fn that(&self, ok: bool, key: &str, msg: impl Into<String>) -> Result<(), RecipeError> {
        if ok {
            Ok(())
        } else {
            Err(RecipeError::new(self.file, Some(key), msg))
        }
    }
}
