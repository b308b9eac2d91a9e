//! The built-in model's tokenizer: a small byte-level BPE trained on the task corpus, laid out like
//! DeepSeek-R1's (begin/end of sentence are ids 0 and 1; `<｜User｜>`, `<｜Assistant｜>`, `<think>`,
//! `</think>` are added tokens), saved as `tokenizer.json` plus a `tokenizer_config.json` carrying
//! R1's published chat template.
//!
//! Digits are split one per token before BPE (as DeepSeek-V3's pre-tokenizer does for numbers), so
//! no merge ever glues digits together and every column of a sum is one token per digit.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{json, Value};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

pub const BOS: &str = "<｜begin▁of▁sentence｜>";
pub const EOS: &str = "<｜end▁of▁sentence｜>";
pub const USER: &str = "<｜User｜>";
pub const ASSISTANT: &str = "<｜Assistant｜>";
pub const THINK: &str = "<think>";
pub const END_THINK: &str = "</think>";

/// DeepSeek-R1's chat template, verbatim (its generation prompt ends in `<｜Assistant｜><think>\n`).
pub const R1_CHAT_TEMPLATE: &str = include_str!("../../scripts/templates/deepseek_r1.jinja");

/// Trains the BPE on `texts` (plain text: no special-token strings) up to `vocab_size` entries
/// before the four added tokens. Deterministic: the same texts give the same tokenizer.
pub fn train_bpe<I>(texts: I, vocab_size: usize) -> Result<Tokenizer, String>
where
    I: Iterator<Item = String> + Send,
{
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevel::default()));
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(BOS, true).normalized(false),
            AddedToken::from(EOS, true).normalized(false),
        ])
        .initial_alphabet(alphabet)
        .build()
        .into();
    tok.train(&mut trainer, texts)
        .map_err(|e| format!("training the tokenizer: {e}"))?;
    // Like R1-Distill, these four are added tokens that are not "special" (skipping special tokens
    // when decoding keeps them).
    tok.add_tokens(
        &[USER, ASSISTANT, THINK, END_THINK]
            .map(|s| AddedToken::from(s, false).normalized(false).special(false)),
    );
    let bos = tok.token_to_id(BOS).ok_or("BOS missing after training")?;
    if bos != 0 || tok.token_to_id(EOS) != Some(1) {
        return Err("BOS and EOS must be ids 0 and 1".into());
    }
    // Encoding with special tokens prepends BOS, as R1's tokenizer does (a rendered chat already
    // starts with BOS, so it is encoded without them).
    let post = TemplateProcessing::builder()
        .try_single(format!("{BOS}:0 $A:0"))
        .and_then(|b| b.try_pair(format!("{BOS}:0 $A:0 {BOS}:1 $B:1")))
        .map_err(|e| format!("post-processor: {e}"))?
        .special_tokens(vec![(BOS, bos)])
        .build()
        .map_err(|e| format!("post-processor: {e}"))?;
    tok.with_post_processor(Some(post));
    Ok(tok)
}

/// `tokenizer_config.json`: the keys of DeepSeek-R1-Distill's, with R1's chat template.
pub fn tokenizer_config(tok: &Tokenizer, model_max_length: usize) -> Value {
    let mut added = serde_json::Map::new();
    let mut decoder: Vec<_> = tok.get_added_tokens_decoder().into_iter().collect();
    decoder.sort_by_key(|(id, _)| *id);
    for (id, t) in decoder {
        added.insert(
            id.to_string(),
            json!({
                "content": t.content,
                "lstrip": t.lstrip,
                "normalized": t.normalized,
                "rstrip": t.rstrip,
                "single_word": t.single_word,
                "special": t.special,
            }),
        );
    }
    json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "clean_up_tokenization_spaces": false,
        "eos_token": EOS,
        "legacy": true,
        "model_max_length": model_max_length,
        "pad_token": EOS,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
        "unk_token": null,
        "use_default_system_prompt": false,
        "chat_template": R1_CHAT_TEMPLATE,
    })
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub fn write_files(dir: &Path, tok: &Tokenizer, model_max_length: usize) -> std::io::Result<()> {
    let text = tok
        .to_string(true)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(dir.join("tokenizer.json"), text + "\n")?;
    let config = serde_json::to_string_pretty(&tokenizer_config(tok, model_max_length))?;
    std::fs::write(dir.join("tokenizer_config.json"), config + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{ChatMessage, TextCodec};

    fn corpus() -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..200u32 {
            v.push(format!("What is {} + {}?", i * 37, i * 11));
            v.push(format!(
                "{}+{}: 1+2+0=3, 3\n</think>\n\nThe answer is {}.",
                i,
                i + 1,
                2 * i + 1
            ));
        }
        v
    }

    #[test]
    fn layout_matches_r1_and_digits_stay_single() {
        let tok = train_bpe(corpus().into_iter(), 300).unwrap();
        assert_eq!(tok.token_to_id(BOS), Some(0));
        assert_eq!(tok.token_to_id(EOS), Some(1));
        let n = tok.get_vocab_size(true) as u32;
        // The four added tokens come last.
        for (k, s) in [USER, ASSISTANT, THINK, END_THINK].iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(n - 4 + k as u32), "{s}");
        }
        let enc = tok.encode("4821+397=5218", false).unwrap();
        let pieces: Vec<String> = enc.get_tokens().to_vec();
        assert_eq!(
            pieces,
            ["4", "8", "2", "1", "+", "3", "9", "7", "=", "5", "2", "1", "8"]
        );
        // Round trip, spaces and newlines included.
        let s = "The answer is 12.\n\nWhat is 3 - 4?";
        let ids = tok.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
    }

    #[test]
    fn training_is_deterministic() {
        let a = train_bpe(corpus().into_iter(), 300).unwrap();
        let b = train_bpe(corpus().into_iter(), 300).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
    }

    #[test]
    fn the_engine_reads_what_is_written_and_renders_r1_prompts() {
        let tok = train_bpe(corpus().into_iter(), 300).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), &tok, 1024).unwrap();
        let codec = TextCodec::load(dir.path()).unwrap();
        assert_eq!(codec.bos_id(), Some(0));
        assert_eq!(codec.eos_ids(), &[1]);
        assert!(codec.think_ids().is_some());
        let p = codec
            .encode_chat(&[ChatMessage::user("What is 2 + 3?")], true)
            .unwrap();
        assert_eq!(
            p.text,
            format!("{BOS}{USER}What is 2 + 3?{ASSISTANT}{THINK}\n")
        );
        assert_eq!(p.ids[0], 0);
        assert_eq!(p.ids[1], codec.token_id(USER).unwrap());
        let (think, _) = codec.think_ids().unwrap();
        assert_eq!(p.ids[p.ids.len() - 2], think);
        assert_eq!(codec.decode(&p.ids), p.text);
    }
}
