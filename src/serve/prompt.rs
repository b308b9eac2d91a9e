//! `/v1/completions`' `prompt`: one string (raw text, no template, no BOS added: the same ids as
//! `thinkbench generate --prompt`) or one array of token ids. Several prompts in one request are
//! refused by name: send them as separate requests, which the engine batches anyway.

use serde_json::Value;

use super::fields::{wrong, Fields};
use super::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

/// `vocab` bounds the ids a prompt may use.
pub(crate) fn parse_prompt(f: &Fields, vocab: usize) -> Result<PromptInput, ApiError> {
    let several = || {
        ApiError::bad_field(
            "prompt",
            "one prompt per request: send several prompts as separate requests (they are batched)",
        )
    };
    let prompt = match f.get("prompt") {
        None => return Err(ApiError::bad_field("prompt", "`prompt` is required")),
        Some(Value::String(s)) => PromptInput::Text(s.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => PromptInput::Text(s.clone()),
            [Value::Array(ids)] => PromptInput::Ids(ids_of("prompt[0]", ids, vocab)?),
            [Value::String(_) | Value::Array(_), _, ..] => return Err(several()),
            ids => PromptInput::Ids(ids_of("prompt", ids, vocab)?),
        },
        Some(v) => return Err(wrong("prompt", "a string or an array of token ids", v)),
    };
    let empty = match &prompt {
        PromptInput::Text(s) => s.is_empty(),
        PromptInput::Ids(ids) => ids.is_empty(),
    };
    if empty {
        return Err(ApiError::bad_field("prompt", "`prompt` must not be empty"));
    }
    Ok(prompt)
}

fn ids_of(at: &str, items: &[Value], vocab: usize) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            Some(id) => Err(ApiError::bad_field(
                format!("{at}[{i}]"),
                format!("token id {id} is outside the vocabulary (0..{vocab})"),
            )),
            None => Err(wrong(
                &format!("{at}[{i}]"),
                "a token id (a non-negative integer)",
                v,
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(v: Value) -> Result<PromptInput, ApiError> {
        let map = json!({ "prompt": v }).as_object().unwrap().clone();
        parse_prompt(&Fields(&map), 100)
    }

    #[test]
    fn one_prompt_as_text_or_ids() {
        assert_eq!(prompt(json!("hi")).unwrap(), PromptInput::Text("hi".into()));
        assert_eq!(
            prompt(json!(["hi"])).unwrap(),
            PromptInput::Text("hi".into())
        );
        assert_eq!(prompt(json!([1, 2])).unwrap(), PromptInput::Ids(vec![1, 2]));
        assert_eq!(prompt(json!([[3]])).unwrap(), PromptInput::Ids(vec![3]));
    }

    #[test]
    fn bad_prompts_are_named() {
        let param = |v: Value| prompt(v).unwrap_err().param.unwrap();
        assert_eq!(param(json!(["a", "b"])), "prompt");
        assert_eq!(param(json!([[1], [2]])), "prompt");
        assert_eq!(param(json!("")), "prompt");
        assert_eq!(param(json!([])), "prompt");
        assert_eq!(param(json!([1, 100])), "prompt[1]");
        assert_eq!(param(json!([1, -1])), "prompt[1]");
        assert_eq!(param(json!([[1, "x"]])), "prompt[0][1]");
        assert_eq!(param(json!(5)), "prompt");
    }
}
