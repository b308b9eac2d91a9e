//! The chat request's own fields: `messages` (string content, or an array of text parts joined)
//! and `chat_template_kwargs` (extra variables for the template).

use serde_json::{Map, Value};

use super::fields::{kind_of, wrong, Fields};
use super::ApiError;
use crate::text::template::FIXED_VARIABLES;
use crate::text::ChatMessage;

pub(crate) fn parse_messages(f: &Fields) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match f.get("messages") {
        None => {
            return Err(ApiError::bad_field(
                "messages",
                "`messages` is required: a non-empty array of {role, content}",
            ))
        }
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(ApiError::bad_field(
                "messages",
                "`messages` must not be empty",
            ))
        }
        Some(Value::Array(list)) => list,
        Some(v) => return Err(wrong("messages", "an array of messages", v)),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| message(&format!("messages[{i}]"), m))
        .collect()
}

fn message(at: &str, m: &Value) -> Result<ChatMessage, ApiError> {
    let Value::Object(m) = m else {
        return Err(wrong(at, "an object with `role` and `content`", m));
    };
    let role = match m.get("role") {
        Some(Value::String(r)) if !r.is_empty() => r.clone(),
        Some(v) if !v.is_null() => return Err(wrong(&format!("{at}.role"), "a string", v)),
        _ => {
            return Err(ApiError::bad_field(
                format!("{at}.role"),
                format!("`{at}.role` is required"),
            ))
        }
    };
    let content = content(&format!("{at}.content"), m.get("content"))?;
    Ok(ChatMessage::new(role, content))
}

const TEXT_PART: &str = "a content part `{\"type\": \"text\", \"text\": ...}`";

/// A string; null or absent (an assistant turn that only called tools) as empty; or an array of
/// `{"type": "text", "text": ...}` parts, joined as they are (no separator, as OpenAI's own
/// rendering of text parts does).
fn content(at: &str, v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let at = format!("{at}[{i}]");
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), other) => {
                        return Err(ApiError::bad_field(
                            format!("{at}.text"),
                            format!(
                                "`{at}.text` must be a string; got {}",
                                other.map_or("nothing", kind_of)
                            ),
                        ))
                    }
                    (Some(other), _) => {
                        let at = format!("{at}.type");
                        let msg = format!("`{at}` `{other}` is not supported: text parts only");
                        return Err(ApiError::bad_field(at, msg));
                    }
                    (None, _) => return Err(wrong(&at, TEXT_PART, part)),
                }
            }
            Ok(text)
        }
        Some(v) => Err(wrong(at, "a string or an array of text parts", v)),
    }
}

/// `chat_template_kwargs`: an object whose entries become template variables. The variables the
/// server sets itself (`messages`, `add_generation_prompt`, ...) cannot be replaced.
pub(crate) fn template_kwargs(f: &Fields) -> Result<Map<String, Value>, ApiError> {
    match f.get("chat_template_kwargs") {
        None => Ok(Map::new()),
        Some(Value::Object(o)) => {
            if let Some(name) = o.keys().find(|k| FIXED_VARIABLES.contains(&k.as_str())) {
                let at = format!("chat_template_kwargs.{name}");
                return Err(ApiError::bad_field(
                    &at,
                    format!("`{at}` is set by the server and cannot be replaced"),
                ));
            }
            Ok(o.clone())
        }
        Some(v) => Err(wrong("chat_template_kwargs", "an object", v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(v: Value) -> Result<Vec<ChatMessage>, ApiError> {
        let map = json!({ "messages": v }).as_object().unwrap().clone();
        parse_messages(&Fields(&map))
    }

    #[test]
    fn strings_and_text_parts() {
        let got = messages(json!([
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "reasoning_content": "ignored"},
        ]))
        .unwrap();
        assert_eq!(
            got,
            vec![
                ChatMessage::system("s"),
                ChatMessage::user("ab"),
                ChatMessage::assistant("")
            ]
        );
    }

    #[test]
    fn bad_messages_are_named() {
        let param = |v: Value| messages(v).unwrap_err().param.unwrap();
        assert_eq!(param(json!([])), "messages");
        assert_eq!(param(json!("hi")), "messages");
        assert_eq!(
            param(json!([{"role": "user", "content": "a"}, {"content": "b"}])),
            "messages[1].role"
        );
        assert_eq!(
            param(json!([{"role": "user", "content": 5}])),
            "messages[0].content"
        );
        assert_eq!(
            param(json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])),
            "messages[0].content[0].type"
        );
        assert_eq!(
            param(json!([{"role": "user", "content": [{"type": "text"}]}])),
            "messages[0].content[0].text"
        );
        assert_eq!(param(json!([3])), "messages[0]");
    }

    #[test]
    fn kwargs_are_an_object_without_fixed_names() {
        let kw = |v: Value| {
            let map = json!({ "chat_template_kwargs": v })
                .as_object()
                .unwrap()
                .clone();
            template_kwargs(&Fields(&map))
        };
        assert_eq!(
            kw(json!({"enable_thinking": false})).unwrap()["enable_thinking"],
            false
        );
        assert_eq!(
            kw(json!({"messages": []})).unwrap_err().param.as_deref(),
            Some("chat_template_kwargs.messages")
        );
        assert_eq!(
            kw(json!([1])).unwrap_err().param.as_deref(),
            Some("chat_template_kwargs")
        );
    }
}
