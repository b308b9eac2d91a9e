//! `tokenizer_config.json`: the special-token strings and the chat template, as published on the hub.

use super::{parse_json, read_text, Result, TextError};
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// The keys of `tokenizer_config.json` that thinkbench uses. Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TokenizerConfig {
    #[serde(default, deserialize_with = "token_string")]
    pub bos_token: Option<String>,
    #[serde(default, deserialize_with = "token_string")]
    pub eos_token: Option<String>,
    #[serde(default, deserialize_with = "token_string")]
    pub pad_token: Option<String>,
    #[serde(default, deserialize_with = "token_string")]
    pub unk_token: Option<String>,
    /// Whether transformers adds BOS when encoding plain text. Informational: a chat template emits
    /// its own BOS, and `--prompt` text is fed as typed.
    #[serde(default)]
    pub add_bos_token: Option<bool>,
    #[serde(default)]
    pub add_eos_token: Option<bool>,
    #[serde(default)]
    pub chat_template: Option<ChatTemplateField>,
    /// Some configs write a huge sentinel (1e30) here, so it is read as a float; see
    /// [`TokenizerConfig::max_length`].
    #[serde(default)]
    pub model_max_length: Option<f64>,
}

/// `chat_template` is either one template or a list of named ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ChatTemplateField {
    Single(String),
    Named(Vec<NamedTemplate>),
}

/// One entry of a `chat_template` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NamedTemplate {
    pub name: String,
    pub template: String,
}

/// A special token is written either as its string or as an `AddedToken` object with `content`.
fn token_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Object { content: String },
    }
    Ok(Option::<Repr>::deserialize(d)?.map(|r| match r {
        Repr::Text(s) | Repr::Object { content: s } => s,
    }))
}

impl TokenizerConfig {
    /// Reads `path`; a missing file is an error (use [`TokenizerConfig::load_optional`] otherwise).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_json(path, &read_text(path)?)
    }

    /// Reads `path` if it exists, else returns the empty config.
    pub fn load_optional(path: &Path) -> Result<Self> {
        match read_text(path) {
            Ok(text) => Self::from_json(path, &text),
            Err(TextError::Missing(_)) => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Parses the JSON text of the file at `path` (the path is only used in error messages).
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        parse_json(path, text)
    }

    /// The template transformers would use when no name is asked for: the single template, or the
    /// one named "default" from a list. `Ok(None)` when the config has none.
    pub fn default_chat_template(&self, path: &Path) -> Result<Option<String>> {
        match &self.chat_template {
            None => Ok(None),
            Some(ChatTemplateField::Single(s)) => Ok(Some(s.clone())),
            Some(ChatTemplateField::Named(list)) => match list.iter().find(|t| t.name == "default")
            {
                Some(t) => Ok(Some(t.template.clone())),
                None => Err(TextError::Invalid {
                    path: path.into(),
                    msg: format!(
                        "chat_template lists templates [{}] but none is named \"default\"",
                        list.iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            },
        }
    }

    /// `model_max_length` when it is a real limit (transformers writes ~1e30 for "no limit").
    pub fn max_length(&self) -> Option<usize> {
        self.model_max_length
            .filter(|n| (1.0..1e15).contains(n))
            .map(|n| n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_as_strings_or_objects() {
        let j = r#"{
            "add_bos_token": true,
            "bos_token": {"__type": "AddedToken", "content": "<｜begin▁of▁sentence｜>", "lstrip": false},
            "eos_token": "<｜end▁of▁sentence｜>",
            "pad_token": null,
            "model_max_length": 16384,
            "chat_template": "{{ bos_token }}",
            "tokenizer_class": "LlamaTokenizerFast"
        }"#;
        let c = TokenizerConfig::from_json(Path::new("tokenizer_config.json"), j).unwrap();
        assert_eq!(c.bos_token.as_deref(), Some("<｜begin▁of▁sentence｜>"));
        assert_eq!(c.eos_token.as_deref(), Some("<｜end▁of▁sentence｜>"));
        assert_eq!(c.pad_token, None);
        assert_eq!(c.unk_token, None);
        assert_eq!(c.add_bos_token, Some(true));
        assert_eq!(c.max_length(), Some(16384));
        assert_eq!(
            c.default_chat_template(Path::new("x")).unwrap().as_deref(),
            Some("{{ bos_token }}")
        );
    }

    #[test]
    fn named_templates_pick_default() {
        let j = r#"{"chat_template": [{"name": "tool_use", "template": "T"},
                                      {"name": "default", "template": "D"}],
                    "model_max_length": 1000000000000000019884624838656}"#;
        let c = TokenizerConfig::from_json(Path::new("tokenizer_config.json"), j).unwrap();
        assert_eq!(
            c.default_chat_template(Path::new("x")).unwrap().as_deref(),
            Some("D")
        );
        assert_eq!(c.max_length(), None);

        let j = r#"{"chat_template": [{"name": "tool_use", "template": "T"}]}"#;
        let c = TokenizerConfig::from_json(Path::new("tokenizer_config.json"), j).unwrap();
        let e = c
            .default_chat_template(Path::new("d/tokenizer_config.json"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "d/tokenizer_config.json: chat_template lists templates [tool_use] but none is named \"default\""
        );
    }

    #[test]
    fn empty_and_missing() {
        let c = TokenizerConfig::from_json(Path::new("t"), "{}").unwrap();
        assert_eq!(c, TokenizerConfig::default());
        let c = TokenizerConfig::load_optional(Path::new("/nonexistent/tokenizer_config.json"));
        assert_eq!(c.unwrap(), TokenizerConfig::default());
    }
}
