//! `generation_config.json`: the sampling defaults and stop ids a model is published with.

use super::{parse_json, read_text, Result, TextError};
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// The keys of `generation_config.json` that matter to thinkbench, as written (no defaults
/// invented here: a key the file lacks is `None`). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    /// `eos_token_id`, which the hub writes as one id or a list of ids.
    #[serde(default, rename = "eos_token_id", deserialize_with = "one_or_many")]
    pub eos_token_ids: Vec<u32>,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "first_of_one_or_many")]
    pub pad_token_id: Option<u32>,
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default)]
    pub repetition_penalty: Option<f64>,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Prompt plus generated tokens, as transformers counts it.
    #[serde(default)]
    pub max_length: Option<usize>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<Repr>::deserialize(d)? {
        None => Vec::new(),
        Some(Repr::One(id)) => vec![id],
        Some(Repr::Many(ids)) => ids,
    })
}

fn first_of_one_or_many<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u32>, D::Error> {
    Ok(one_or_many(d)?.first().copied())
}

impl GenerationDefaults {
    /// Reads `path` if it exists; `Ok(None)` when it does not (the file is optional).
    pub fn load_optional(path: &Path) -> Result<Option<Self>> {
        match read_text(path) {
            Ok(text) => Self::from_json(path, &text).map(Some),
            Err(TextError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses the JSON text of the file at `path` (the path is only used in error messages).
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        parse_json(path, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_distill_config() {
        // As published with DeepSeek-R1-Distill-Qwen-1.5B.
        let j = r#"{"_from_model_config": true, "bos_token_id": 151646, "eos_token_id": 151643,
                    "do_sample": true, "temperature": 0.6, "top_p": 0.95,
                    "transformers_version": "4.39.3"}"#;
        let g = GenerationDefaults::from_json(Path::new("generation_config.json"), j).unwrap();
        assert_eq!(g.eos_token_ids, vec![151643]);
        assert_eq!(g.bos_token_id, Some(151646));
        assert_eq!(g.do_sample, Some(true));
        assert_eq!(g.temperature, Some(0.6));
        assert_eq!(g.top_p, Some(0.95));
        assert_eq!(g.top_k, None);
        assert_eq!(g.max_new_tokens, None);
    }

    #[test]
    fn eos_list_and_null() {
        let p = Path::new("generation_config.json");
        let g = GenerationDefaults::from_json(
            p,
            r#"{"eos_token_id": [128001, 128008, 128009], "top_k": 20, "max_new_tokens": 512}"#,
        )
        .unwrap();
        assert_eq!(g.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(g.top_k, Some(20));
        assert_eq!(g.max_new_tokens, Some(512));
        let g = GenerationDefaults::from_json(p, r#"{"eos_token_id": null}"#).unwrap();
        assert!(g.eos_token_ids.is_empty());
        let e = GenerationDefaults::from_json(p, r#"{"eos_token_id": "x"}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("generation_config.json: unexpected content"),
            "{e}"
        );
    }

    #[test]
    fn missing_is_none() {
        let g = GenerationDefaults::load_optional(Path::new("/nonexistent/generation_config.json"));
        assert_eq!(g.unwrap(), None);
    }
}
