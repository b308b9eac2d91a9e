//! Chat templates, rendered as transformers' `apply_chat_template` renders them.
//!
//! transformers compiles a template in a jinja2 `ImmutableSandboxedEnvironment` with
//! `trim_blocks=True, lstrip_blocks=True` (and the default `keep_trailing_newline=False`, no
//! autoescaping), adds the `loopcontrols` extension and a `{% generation %}` tag, replaces the
//! `tojson` filter with `json.dumps(x, ensure_ascii=False, ...)`, and adds the globals
//! `raise_exception(msg)` and `strftime_now(fmt)`. It renders with `messages`, `tools` (None),
//! `documents` (None), `add_generation_prompt`, and every special token the tokenizer has set
//! (`bos_token`, `eos_token`, `pad_token`, `unk_token`, ...; unset ones are left undefined).
//! The output is used as is: no strip, no trailing newline added.
//!
//! [`ChatTemplate`] sets minijinja up the same way. Python string/list/dict methods that templates
//! call (`content.split('</think>')[-1]`, `.strip()`, `.startswith(...)`, `.items()`) come from
//! minijinja-contrib's `pycompat`.

use super::{one_line, parse_json, read_text, Result, TextError};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat message. Message files are `[{"role": "...", "content": "..."}, ...]` or
/// `{"messages": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Reads a messages file (see [`ChatMessage`]).
pub fn load_messages(path: &Path) -> Result<Vec<ChatMessage>> {
    parse_messages(path, &read_text(path)?)
}

/// Parses the JSON text of a messages file; `path` is only used in error messages.
pub fn parse_messages(path: &Path, text: &str) -> Result<Vec<ChatMessage>> {
    let value: serde_json::Value = parse_json(path, text)?;
    let invalid = |msg: String| TextError::Invalid {
        path: path.into(),
        msg,
    };
    let list = match value {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(mut map) => match map.remove("messages") {
            Some(serde_json::Value::Array(list)) => list,
            _ => {
                return Err(invalid(
                    "expected a list of messages or an object with a \"messages\" list".into(),
                ))
            }
        },
        _ => {
            return Err(invalid(
                "expected a list of messages or an object with a \"messages\" list".into(),
            ))
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            serde_json::from_value::<ChatMessage>(m)
                .map_err(|e| invalid(format!("message {}: {}", i + 1, one_line(e))))
        })
        .collect()
}

/// A compiled chat template. `origin` names where it came from (for error messages), e.g.
/// `/models/r1/tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    origin: String,
    source: String,
}

const TEMPLATE_NAME: &str = "chat_template";

/// The variables every rendering sets from its own arguments; extra variables cannot replace them.
pub const FIXED_VARIABLES: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

impl ChatTemplate {
    /// Compiles `source` with transformers' jinja settings.
    pub fn new(source: &str, origin: impl Into<String>) -> Result<Self> {
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_formatter(python_formatter);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| TextError::TemplateSyntax {
                origin: origin.clone(),
                msg: describe(&e),
            })?;
        Ok(Self {
            env,
            origin,
            source: source.to_string(),
        })
    }

    /// The template's text as published.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Renders `messages`. `special_tokens` are the `(name, string)` pairs the tokenizer has set,
    /// e.g. `("bos_token", "<｜begin▁of▁sentence｜>")`; names not given stay undefined, as in
    /// transformers.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        special_tokens: &[(&str, &str)],
    ) -> Result<String> {
        self.render_with(
            messages,
            add_generation_prompt,
            special_tokens,
            &serde_json::Map::new(),
        )
    }

    /// [`Self::render`] with extra template variables, as transformers'
    /// `apply_chat_template(..., **kwargs)` passes them (`{"enable_thinking": false}`, what a
    /// server's `chat_template_kwargs` carries). An extra variable replaces a special token of
    /// the same name, as there; the names in [`FIXED_VARIABLES`] are the caller's arguments and
    /// are never replaced (transformers would refuse them as duplicate arguments).
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        special_tokens: &[(&str, &str)],
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let mut ctx: Vec<(String, Value)> = vec![
            ("messages".into(), Value::from_serialize(messages)),
            ("tools".into(), Value::from(())),
            ("documents".into(), Value::from(())),
            (
                "add_generation_prompt".into(),
                Value::from(add_generation_prompt),
            ),
        ];
        for (name, s) in special_tokens {
            ctx.push(((*name).into(), Value::from(*s)));
        }
        for (name, v) in extra {
            if !FIXED_VARIABLES.contains(&name.as_str()) {
                ctx.push((name.clone(), Value::from_serialize(v)));
            }
        }
        // Collecting into a map keeps the last value of a repeated name: extras win over
        // special tokens.
        let ctx: Value = ctx.into_iter().collect();
        let render_error = |e: Error| TextError::Render {
            origin: self.origin.clone(),
            msg: describe(&e),
        };
        self.env
            .get_template(TEMPLATE_NAME)
            .map_err(render_error)?
            .render(ctx)
            .map_err(render_error)
    }
}

const RAISED: &str = "template raised: ";

/// One line for a minijinja error: the template's own message for `raise_exception`, else the
/// kind and detail, with the template line.
fn describe(e: &Error) -> String {
    let mut s = match e.detail() {
        Some(d) if d.starts_with(RAISED) => d.to_string(),
        Some(d) => format!("{}: {}", e.kind(), d),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    one_line(s)
}

/// transformers' `raise_exception(message)`: aborts the render with the template's message.
fn raise_exception(msg: String) -> std::result::Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

/// transformers' `{% generation %}...{% endgeneration %}` only marks assistant spans for training
/// masks; for rendering it is transparent, so the tags become an always-true `if`.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(end) = rest[start + 2..].find("%}").map(|i| start + 2 + i + 2) else {
            break;
        };
        let tag = &rest[start..end];
        let body = &tag[2..tag.len() - 2];
        let control = |c: Option<char>| match c {
            Some(c @ ('-' | '+')) => c.to_string(),
            _ => String::new(),
        };
        let (left, right) = (control(body.chars().next()), control(body.chars().last()));
        let word = body.trim_matches(|c| c == '-' || c == '+').trim();
        out.push_str(&rest[..start]);
        match word {
            "generation" => out.push_str(&format!("{{%{left} if true {right}%}}")),
            "endgeneration" => out.push_str(&format!("{{%{left} endif {right}%}}")),
            _ => out.push_str(tag),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Prints values the way Python's `str()` does inside jinja2 (`True`, `None`, `1e+16`,
/// `['a', 1]`); strings and integers print as minijinja prints them.
fn python_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &Value,
) -> std::result::Result<(), Error> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Seq | ValueKind::Map => {
            out.write_str(&py_repr(value))?;
            Ok(())
        }
        ValueKind::Number if !value.is_integer() => {
            out.write_str(&py_repr(value))?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Python's `repr()` of a template value (used for containers and non-string scalars).
fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number if v.is_integer() => v.to_string(),
        ValueKind::Number => match f64::try_from(v.clone()) {
            Ok(x) if x.is_nan() => "nan".into(),
            Ok(x) if x.is_infinite() => (if x > 0.0 { "inf" } else { "-inf" }).into(),
            Ok(x) => py_float_repr(x),
            Err(_) => v.to_string(),
        },
        ValueKind::String => py_str_repr(v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => format!(
                "[{}]",
                items.map(|i| py_repr(&i)).collect::<Vec<_>>().join(", ")
            ),
            Err(_) => v.to_string(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => format!(
                "{{{}}}",
                keys.map(|k| {
                    let item = v.get_item(&k).unwrap_or_default();
                    format!("{}: {}", py_repr(&k), py_repr(&item))
                })
                .collect::<Vec<_>>()
                .join(", ")
            ),
            Err(_) => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// Python's `repr(str)`: single quotes unless the string has `'` and no `"`.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, byte for byte (Python separators, no HTML escaping, insertion order).
/// `ensure_ascii`, `indent` and `separators` may be given by position, `sort_keys` by name.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> std::result::Result<Value, Error> {
    let pick = |pos: Option<Value>, name: &str| -> std::result::Result<Option<Value>, Error> {
        match pos {
            Some(v) => Ok(Some(v)),
            None => kwargs.get::<Option<Value>>(name),
        }
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => match v.as_i64() {
                Some(n) => Some(" ".repeat(n.max(0) as usize)),
                None => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an integer or a string",
                    ))
                }
            },
        },
    };
    let (item_sep, key_sep) = match pick(separators, "separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    )
                })?;
            (parts[0].clone(), parts[1].clone())
        }
        _ if indent.is_some() => (",".to_string(), ": ".to_string()),
        _ => (", ".to_string(), ": ".to_string()),
    };
    let sort_keys = kwargs
        .get::<Option<Value>>("sort_keys")?
        .is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let opts = JsonOpts {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn write_json(
    out: &mut String,
    v: &Value,
    o: &JsonOpts,
    depth: usize,
) -> std::result::Result<(), Error> {
    let not_serializable = |kind: ValueKind| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: object of type {kind} is not JSON serializable"),
        )
    };
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&py_number(v)?),
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, o, depth, '[', ']', &items, |out, item, depth| {
                write_json(out, item, o, depth)
            })?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                let key = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::Number => py_number(&key)?,
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    ValueKind::None => "null".into(),
                    kind => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!(
                                "tojson: keys must be str, int, float, bool or None, not {kind}"
                            ),
                        ))
                    }
                };
                entries.push((key, item));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(
                out,
                o,
                depth,
                '{',
                '}',
                &entries,
                |out, (k, item), depth| {
                    write_json_str(out, k, o.ensure_ascii);
                    out.push_str(&o.key_sep);
                    write_json(out, item, o, depth)
                },
            )?;
        }
        kind => return Err(not_serializable(kind)),
    }
    Ok(())
}

fn write_container<T>(
    out: &mut String,
    o: &JsonOpts,
    depth: usize,
    open: char,
    close: char,
    items: &[T],
    mut write_item: impl FnMut(&mut String, &T, usize) -> std::result::Result<(), Error>,
) -> std::result::Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        write_item(out, item, depth + 1)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it.
fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
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
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python's `json.dumps` writes it (`repr` for floats, `NaN`/`Infinity` too).
fn py_number(v: &Value) -> std::result::Result<String, Error> {
    if v.is_integer() {
        if let Some(n) = v.as_i64() {
            return Ok(n.to_string());
        }
        if let Ok(n) = i128::try_from(v.clone()) {
            return Ok(n.to_string());
        }
    }
    let x = f64::try_from(v.clone())?;
    Ok(py_float_repr(x))
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for 1e-4 <= |x| < 1e16,
/// else `d.ddde+XX`.
pub(crate) fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let sci = format!("{:e}", x.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{sign}{digits}{}.0", "0".repeat(int_len - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let m = if digits.len() == 1 {
            digits
        } else {
            format!("{}.{}", &digits[..1], &digits[1..])
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

/// transformers' `strftime_now(format)`: the current time formatted like C `strftime`. This
/// formats UTC (the usual local time of servers and containers); the common directives are
/// supported, including glibc's `%-d` no-padding form.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime_utc(&format, secs)
}

pub(crate) fn strftime_utc(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let tod = unix_secs.rem_euclid(86_400);
    let (hour, minute, second) = (tod / 3600, tod % 3600 / 60, tod % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let no_pad = chars.peek() == Some(&'-');
        if no_pad {
            chars.next();
        }
        let num = |n: i64, width: usize| {
            if no_pad {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&num(year.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(month, 2)),
            Some('d') => out.push_str(&num(day, 2)),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('H') => out.push_str(&num(hour, 2)),
            Some('I') => out.push_str(&num(hour12, 2)),
            Some('M') => out.push_str(&num(minute, 2)),
            Some('S') => out.push_str(&num(second, 2)),
            Some('j') => out.push_str(&num(yday, 3)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('u') => out.push_str(&(weekday + 1).to_string()),
            Some('w') => out.push_str(&((weekday + 1) % 7).to_string()),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if no_pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// DeepSeek-R1's published chat template, as kept verbatim by the fixture script.
    pub(crate) fn r1_template_source() -> String {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/templates/deepseek_r1.jinja");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const BOS: &str = "<｜begin▁of▁sentence｜>";
    const EOS: &str = "<｜end▁of▁sentence｜>";

    fn r1() -> ChatTemplate {
        ChatTemplate::new(&r1_template_source(), "tokenizer_config.json").unwrap()
    }

    fn render_r1(messages: &[ChatMessage], gen: bool) -> String {
        r1().render(
            messages,
            gen,
            &[("bos_token", BOS), ("eos_token", EOS), ("pad_token", EOS)],
        )
        .unwrap()
    }

    // Expected strings below are written by hand from the template's text and cross-checked with
    // jinja2 3.1 configured as transformers configures it (trim_blocks, lstrip_blocks).

    #[test]
    fn r1_single_user_with_generation_prompt() {
        let got = render_r1(&[ChatMessage::user("What is 2+2?")], true);
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n"
        );
    }

    #[test]
    fn r1_without_generation_prompt() {
        let got = render_r1(&[ChatMessage::user("hi")], false);
        assert_eq!(got, "<｜begin▁of▁sentence｜><｜User｜>hi");
    }

    #[test]
    fn r1_system_prompt_goes_first() {
        let got = render_r1(
            &[
                ChatMessage::system("You are terse."),
                ChatMessage::user("Hello"),
            ],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜>You are terse.<｜User｜>Hello<｜Assistant｜><think>\n"
        );
    }

    #[test]
    fn r1_multi_turn_drops_earlier_reasoning() {
        let got = render_r1(
            &[
                ChatMessage::system("S"),
                ChatMessage::user("1+1?"),
                ChatMessage::assistant("<think>\nadd them\n</think>\n\n2"),
                ChatMessage::user("and 2+2?"),
            ],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜>S<｜User｜>1+1?<｜Assistant｜>\n\n2<｜end▁of▁sentence｜>\
             <｜User｜>and 2+2?<｜Assistant｜><think>\n"
        );
        // Only the text after the *last* `</think>` is kept.
        let got = render_r1(
            &[
                ChatMessage::user("q"),
                ChatMessage::assistant("a</think>b</think>c"),
            ],
            false,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜>c<｜end▁of▁sentence｜>"
        );
        // An assistant message without reasoning is kept whole.
        let got = render_r1(
            &[ChatMessage::user("q"), ChatMessage::assistant("plain")],
            false,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜>plain<｜end▁of▁sentence｜>"
        );
    }

    #[test]
    fn r1_system_prompts_are_joined() {
        let got = render_r1(
            &[
                ChatMessage::system("A."),
                ChatMessage::user("u"),
                ChatMessage::system("B."),
            ],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜>A.\n\nB.<｜User｜>u<｜Assistant｜><think>\n"
        );
    }

    #[test]
    fn r1_tool_messages() {
        let got = render_r1(
            &[
                ChatMessage::user("u"),
                ChatMessage::new("tool", "out1"),
                ChatMessage::new("tool", "out2"),
                ChatMessage::assistant("done"),
            ],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>u<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>out1\
             <｜tool▁output▁end｜><｜tool▁output▁begin｜>out2<｜tool▁output▁end｜>\
             <｜tool▁outputs▁end｜>done<｜end▁of▁sentence｜><｜Assistant｜><think>\n"
        );
        // A trailing tool output closes the outputs block and suppresses the generation prompt.
        let got = render_r1(
            &[ChatMessage::user("u"), ChatMessage::new("tool", "o")],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>u<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>o\
             <｜tool▁output▁end｜><｜tool▁outputs▁end｜>"
        );
    }

    #[test]
    fn r1_user_text_is_verbatim() {
        let got = render_r1(
            &[ChatMessage::user(
                "  spaced\n\n{{ not jinja }} <think> %}  ",
            )],
            true,
        );
        assert_eq!(
            got,
            "<｜begin▁of▁sentence｜><｜User｜>  spaced\n\n{{ not jinja }} <think> %}  \
             <｜Assistant｜><think>\n"
        );
    }

    #[test]
    fn whitespace_control_matches_jinja2() {
        // trim_blocks eats the newline after a block tag, lstrip_blocks the indentation before
        // it; a single trailing newline of the template is dropped (keep_trailing_newline=False).
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\nend\n";
        let t = ChatTemplate::new(src, "t").unwrap();
        let got = t
            .render(
                &[ChatMessage::user("a"), ChatMessage::user("b")],
                false,
                &[],
            )
            .unwrap();
        assert_eq!(got, "[a]\n[b]\nend");
    }

    #[test]
    fn variables_as_transformers_passes_them() {
        let src = "{{ tools is none }}|{{ documents is none }}|{{ bos_token }}|{{ unk_token is defined }}|{{ add_generation_prompt }}";
        let t = ChatTemplate::new(src, "t").unwrap();
        let got = t.render(&[], true, &[("bos_token", "<s>")]).unwrap();
        assert_eq!(got, "True|True|<s>|False|True");
    }

    #[test]
    fn extra_variables_reach_the_template_but_not_its_arguments() {
        let src = "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}\
                   {{ bos_token }}|{{ messages|length }}|{{ add_generation_prompt }}|{{ tools is none }}|{{ k.n if k is defined }}";
        let t = ChatTemplate::new(src, "t").unwrap();
        let extra: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"enable_thinking": false, "bos_token": "<B>", "messages": [], "tools": [1],
                "add_generation_prompt": false, "k": {"n": 3}}"#,
        )
        .unwrap();
        let got = t
            .render_with(
                &[ChatMessage::user("u")],
                true,
                &[("bos_token", "<s>")],
                &extra,
            )
            .unwrap();
        assert_eq!(got, "<think>\n\n</think><B>|1|True|True|3");
        let plain = t.render(&[ChatMessage::user("u")], true, &[("bos_token", "<s>")]);
        assert_eq!(plain.unwrap(), "<s>|1|True|True|");
    }

    #[test]
    fn python_methods_and_namespace() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}\
                   {{ ns.n }}|{{ messages[0].content.strip() }}|{{ messages[0].content.split('x')[-1] }}|\
                   {{ messages[0].content.startswith(' a') }}|{{ 'A b'.lower() }}|\
                   {% for k, v in messages[0].items() %}{{ k }}={{ v|length }};{% endfor %}\
                   {% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}";
        let t = ChatTemplate::new(src, "t").unwrap();
        let got = t
            .render(
                &[ChatMessage::user(" axbxc "), ChatMessage::assistant("z")],
                false,
                &[],
            )
            .unwrap();
        assert_eq!(got, "2|axbxc|c |True|a b|role=4;content=7;01");
    }

    #[test]
    fn values_print_as_python_prints_them() {
        let src = "{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }}|{{ none }}|{{ 1e16 }}|{{ 2.0 }}|{{ 7 }}";
        let t = ChatTemplate::new(src, "t").unwrap();
        assert_eq!(
            t.render(&[], false, &[]).unwrap(),
            "[1, 'a', None, True, 1.5, {'k': \"it's\"}]|None|1e+16|2.0|7"
        );
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ messages|tojson }}\n{{ messages[0]|tojson(indent=2) }}\n{{ {'b': 1, 'a': [1.5, none, true, 1e20, 0.0001]}|tojson(sort_keys=true) }}\n{{ 'é\"<&>'|tojson }}|{{ 'é'|tojson(ensure_ascii=true) }}|{{ {'k': 'v'}|tojson(separators=[',', ':']) }}",
            "t",
        )
        .unwrap();
        let got = t
            .render(&[ChatMessage::user("hi\n\"x\"")], false, &[])
            .unwrap();
        assert_eq!(
            got,
            "[{\"role\": \"user\", \"content\": \"hi\\n\\\"x\\\"\"}]\n\
             {\n  \"role\": \"user\",\n  \"content\": \"hi\\n\\\"x\\\"\"\n}\n\
             {\"a\": [1.5, null, true, 1e+20, 0.0001], \"b\": 1}\n\
             \"é\\\"<&>\"|\"\\u00e9\"|{\"k\":\"v\"}"
        );
    }

    #[test]
    fn float_repr_like_python() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (f64::NAN, "NaN"),
            (-0.0, "-0.0"),
        ] {
            assert_eq!(py_float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_formats_utc() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime_utc("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(strftime_utc("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(
            strftime_utc("%A %B %-d, %I%p, day %j %%", t),
            "Thursday February 29, 01PM, day 060 %"
        );
        assert_eq!(strftime_utc("%d %b %Y", 0), "01 Jan 1970");
        let t = ChatTemplate::new("{{ strftime_now('%Y')|length }}", "t").unwrap();
        assert_eq!(t.render(&[], false, &[]).unwrap(), "4");
    }

    #[test]
    fn generation_tags_are_transparent() {
        let src = "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}\n{%- endfor %}";
        let t = ChatTemplate::new(src, "t").unwrap();
        let got = t
            .render(
                &[ChatMessage::user("u"), ChatMessage::assistant("a")],
                false,
                &[],
            )
            .unwrap();
        assert_eq!(got, "ua");
        assert_eq!(
            strip_generation_tags("x{%- generation -%}y{%endgeneration%}"),
            "x{%- if true -%}y{% endif %}"
        );
    }

    #[test]
    fn raise_exception_is_one_line_naming_the_file() {
        let src = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}ok";
        let t = ChatTemplate::new(src, "/m/tokenizer_config.json").unwrap();
        let e = t
            .render(&[ChatMessage::assistant("a")], false, &[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/m/tokenizer_config.json: chat_template failed to render: template raised: \
             Conversation roles must alternate user/assistant/user/assistant/... (template line 1)"
        );
        assert_eq!(
            t.render(&[ChatMessage::user("a")], false, &[]).unwrap(),
            "ok"
        );
    }

    #[test]
    fn other_failures_are_one_line() {
        let e = ChatTemplate::new("{% if %}", "/m/tokenizer_config.json").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/m/tokenizer_config.json: chat_template is not valid Jinja: "),
            "{s}"
        );
        assert!(!s.contains('\n'));
        let t = ChatTemplate::new("{{ messages[0].nope.deeper }}", "tc.json").unwrap();
        let s = t
            .render(&[ChatMessage::user("a")], false, &[])
            .unwrap_err()
            .to_string();
        assert!(
            s.starts_with("tc.json: chat_template failed to render: "),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn messages_files() {
        let p = Path::new("m.json");
        let want = vec![ChatMessage::system("s"), ChatMessage::user("u")];
        let list = r#"[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]"#;
        assert_eq!(parse_messages(p, list).unwrap(), want);
        let obj = format!("{{\"messages\": {list}, \"model\": \"x\"}}");
        assert_eq!(parse_messages(p, &obj).unwrap(), want);
        let e = parse_messages(p, r#"[{"role": "user"}]"#).unwrap_err();
        assert_eq!(e.to_string(), "m.json: message 1: missing field `content`");
        let e = parse_messages(p, r#"{"msgs": []}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.json: expected a list of messages or an object with a \"messages\" list"
        );
    }
}
