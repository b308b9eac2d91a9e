//! Typed access to a request body's fields by name: each reader says what the field should be
//! when it is not (400, `param` = the field). `null` counts as absent, as the openai SDKs send
//! it.

use serde_json::{Map, Value};

use super::ApiError;

/// Typed, named access to the body's fields.
pub(crate) struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(wrong(name, "a boolean", v)),
        }
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(name, "a string", v)),
        }
    }

    /// An integer in `lo..=hi`.
    pub fn int(&self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        // 2.0 is accepted as 2, as Python clients may send it.
        let n = v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
        match n {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            Some(n) => Err(ApiError::bad_field(
                name,
                format!("`{name}` must be between {lo} and {hi}; got {n}"),
            )),
            None => Err(wrong(name, "an integer", v)),
        }
    }

    /// A finite number that passes `ok`, which `expect` describes ("between 0 and 1").
    pub fn number(
        &self,
        name: &str,
        expect: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && ok(x) => Ok(Some(x)),
                Some(x) => Err(ApiError::bad_field(
                    name,
                    format!("`{name}` must be {expect}; got {x}"),
                )),
                None => Err(wrong(name, "a number", v)),
            },
        }
    }
}

/// "`temperature` must be a number; got a string".
pub(crate) fn wrong(name: &str, expect: &str, got: &Value) -> ApiError {
    ApiError::bad_field(
        name,
        format!("`{name}` must be {expect}; got {}", kind_of(got)),
    )
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
