//! A Hugging Face `tokenizer.json` and `tokenizer_config.json` rebuilt from a GGUF file's
//! `tokenizer.*` metadata, for byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`).
//!
//! What the file keeps, and where it goes:
//! - `tokenizer.ggml.tokens` / `token_type`: every token but UNUSED ones is in the BPE
//!   vocabulary at its id; CONTROL (3) and USER_DEFINED (4) tokens are also added tokens,
//!   CONTROL ones `special`;
//!   UNUSED (5) ones are the converter's `[PAD{id}]` fillers up to the embedding size and are left
//!   out, as the original tokenizer never had them;
//! - `tokenizer.ggml.merges` ("a b" strings) are the BPE merges;
//! - `tokenizer.ggml.pre` names the pre-tokenizer. The file does not hold the regex itself: each
//!   known name maps to the pre-tokenizer (and normalizer) of the HF tokenizer it was hashed from,
//!   see [`pre_tokenizer`]. An unknown name is an error naming it;
//! - `tokenizer.ggml.add_bos_token` / `add_eos_token` and the bos/eos ids give the post-processor
//!   (a TemplateProcessing that adds them, as HF's own tokenizers do);
//! - `tokenizer.chat_template` (and named `tokenizer.chat_template.<name>` variants) go to
//!   `tokenizer_config.json`, with the bos/eos/pad/unk token strings.
//!
//! What is lost on the way through llama.cpp's converter and cannot come back: whether an added
//! token was marked `special` in HF when the converter reclassified it (it makes any added token
//! that looks like `<|…|>` or `<｜…｜>` CONTROL), and the normalizer, which GGUF does not record
//! (llama.cpp applies none to BPE text). Encoding is unaffected by the first; the second is
//! restored for the Qwen2 family, whose HF tokenizers normalize to NFC.

use serde_json::{json, Map, Value};

use super::config::invalid;
use super::{GgufFile, Result};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Llama 3's split, as in its tokenizer.json (digits in runs of up to three).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split, as in its tokenizer.json (digits one by one).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-V3's three splits, applied in turn: digit runs of up to three, CJK runs, the rest.
const DEEPSEEK_V3_SPLITS: [&str; 3] = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];

/// The `tokenizer.ggml.pre` names this module knows, one per line of [`pre_tokenizer`].
pub const KNOWN_PRE: &[&str] = &[
    "gpt-2",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "qwen2",
    "deepseek-r1-qwen",
    "deepseek-v3",
];

/// How text is split before BPE, for one `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, PartialEq)]
pub struct PreTokenizer {
    /// The `pre_tokenizer` object of tokenizer.json.
    pub pre_tokenizer: Value,
    /// The `normalizer` object, or null.
    pub normalizer: Value,
    /// BPE `ignore_merges`: a word that is a whole vocabulary entry is not merged (Llama 3).
    pub ignore_merges: bool,
    /// Whether llama.cpp adds BOS for this pre type when the file does not say.
    pub default_add_bos: bool,
}

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn sequence(mut splits: Vec<Value>) -> Value {
    splits.push(byte_level(false));
    json!({"type": "Sequence", "pretokenizers": splits})
}

/// The HF pre-tokenizer for a `tokenizer.ggml.pre` name; `None` for a name not in [`KNOWN_PRE`].
///
/// - `gpt-2`: byte-level with GPT-2's own regex (llama.cpp's GPT2 pre type). Our fixtures'
///   tokenizer is this one;
/// - `llama-bpe`, `llama3`, `llama-v3`: Llama 3's split, `ignore_merges`, BOS by default;
/// - `qwen2`, `deepseek-r1-qwen` (Qwen's vocabulary with DeepSeek's special tokens): Qwen2's
///   split, NFC normalization (Qwen2's HF tokenizer normalizes to NFC; assumed for the R1
///   distills of Qwen, which keep its vocabulary);
/// - `deepseek-v3` (DeepSeek-V3 and R1): DeepSeek-V3's three splits.
pub fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    let plain = |pre_tokenizer| PreTokenizer {
        pre_tokenizer,
        normalizer: Value::Null,
        ignore_merges: false,
        default_add_bos: false,
    };
    Some(match pre {
        "gpt-2" => plain(byte_level(true)),
        "llama-bpe" | "llama3" | "llama-v3" => PreTokenizer {
            ignore_merges: true,
            default_add_bos: true,
            ..plain(sequence(vec![split(LLAMA3_SPLIT)]))
        },
        "qwen2" | "deepseek-r1-qwen" => PreTokenizer {
            normalizer: json!({"type": "NFC"}),
            ..plain(sequence(vec![split(QWEN2_SPLIT)]))
        },
        "deepseek-v3" => plain(sequence(
            DEEPSEEK_V3_SPLITS.iter().map(|p| split(p)).collect(),
        )),
        _ => return None,
    })
}

/// The token list and its types (all NORMAL when the file has none).
struct Vocab<'a> {
    tokens: &'a [String],
    types: Vec<i32>,
}

fn vocab(gguf: &GgufFile) -> Result<Vocab<'_>> {
    let model = gguf.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(invalid(
            gguf,
            "metadata key `tokenizer.ggml.model`",
            format!("\"{model}\" is not supported (only \"gpt2\", byte-level BPE)"),
        ));
    }
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let types = match gguf.get_opt::<Vec<i32>>("tokenizer.ggml.token_type")? {
        Some(t) => t,
        None => vec![NORMAL; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(invalid(
            gguf,
            "metadata key `tokenizer.ggml.token_type`",
            format!("{} types for {} tokens", types.len(), tokens.len()),
        ));
    }
    Ok(Vocab { tokens, types })
}

/// The token string for the id under `key`, if the file names one.
fn special_token<'a>(gguf: &'a GgufFile, v: &Vocab<'a>, key: &str) -> Result<Option<&'a str>> {
    let Some(id) = gguf.get_opt::<u32>(key)? else {
        return Ok(None);
    };
    match v.tokens.get(id as usize) {
        Some(t) => Ok(Some(t.as_str())),
        None => Err(invalid(
            gguf,
            format!("metadata key `{key}`"),
            format!("id {id} is past the {} tokens", v.tokens.len()),
        )),
    }
}

/// `tokenizer.json` for `gguf`, as its text.
pub fn tokenizer_json(gguf: &GgufFile) -> Result<String> {
    let pre = gguf.get_str("tokenizer.ggml.pre")?;
    tokenizer_json_with_pre(gguf, pre)
}

/// [`tokenizer_json`] with the pre-tokenizer named `pre` instead of the file's.
pub fn tokenizer_json_with_pre(gguf: &GgufFile, pre: &str) -> Result<String> {
    let spec = pre_tokenizer(pre).ok_or_else(|| {
        invalid(
            gguf,
            "metadata key `tokenizer.ggml.pre`",
            format!(
                "pre-tokenizer \"{pre}\" is not supported (known: {})",
                KNOWN_PRE.join(", ")
            ),
        )
    })?;
    let v = vocab(gguf)?;

    let mut model_vocab = Map::new();
    let mut added = vec![];
    for (id, (tok, &ty)) in v.tokens.iter().zip(&v.types).enumerate() {
        if ty == UNUSED {
            continue;
        }
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": ty == CONTROL,
            }));
        }
        // Added tokens go in the BPE vocabulary too: `tokenizers` gives an added token the id
        // its string has there, and otherwise the next id past the vocabulary, whatever the
        // file says. A repeated string keeps its first id, as a dictionary holds only one.
        if !model_vocab.contains_key(tok) {
            model_vocab.insert(tok.clone(), json!(id));
        }
    }
    let merges: Vec<Value> = match gguf.get_opt::<&[String]>("tokenizer.ggml.merges")? {
        Some(m) => m
            .iter()
            .map(|s| match s.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok(json!([a, b]))
                }
                _ => Err(invalid(
                    gguf,
                    "metadata key `tokenizer.ggml.merges`",
                    format!("merge {s:?} is not two tokens separated by one space"),
                )),
            })
            .collect::<Result<_>>()?,
        None => vec![],
    };

    let add_bos = gguf
        .get_opt::<bool>("tokenizer.ggml.add_bos_token")?
        .unwrap_or(spec.default_add_bos);
    let add_eos = gguf
        .get_opt::<bool>("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    let bos = special_token(gguf, &v, "tokenizer.ggml.bos_token_id")?;
    let eos = special_token(gguf, &v, "tokenizer.ggml.eos_token_id")?;
    let post_processor = post_processor(gguf, (add_bos, bos), (add_eos, eos), &v)?;

    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": spec.normalizer,
        "pre_tokenizer": spec.pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": spec.ignore_merges,
            "vocab": model_vocab,
            "merges": merges,
        },
    });
    Ok(serde_json::to_string_pretty(&doc).expect("JSON values serialize"))
}

/// A TemplateProcessing that adds BOS and/or EOS around each sequence, or a plain ByteLevel one.
fn post_processor(
    gguf: &GgufFile,
    (add_bos, bos): (bool, Option<&str>),
    (add_eos, eos): (bool, Option<&str>),
    v: &Vocab,
) -> Result<Value> {
    let need = |add: bool, tok: Option<&str>, key: &str| -> Result<Option<String>> {
        match (add, tok) {
            (false, _) => Ok(None),
            (true, Some(t)) => Ok(Some(t.to_string())),
            (true, None) => Err(invalid(
                gguf,
                format!("metadata key `tokenizer.ggml.{key}_token_id`"),
                format!("missing, but tokenizer.ggml.add_{key}_token is true"),
            )),
        }
    };
    let bos = need(add_bos, bos, "bos")?;
    let eos = need(add_eos, eos, "eos")?;
    if bos.is_none() && eos.is_none() {
        return Ok(
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
        );
    }
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |s: &str, type_id: u32| json!({"Sequence": {"id": s, "type_id": type_id}});
    let (mut single, mut pair) = (vec![], vec![]);
    let around = |s: &str, type_id: u32, out: &mut Vec<Value>| {
        if let Some(b) = &bos {
            out.push(special(b, type_id));
        }
        out.push(seq(s, type_id));
        if let Some(e) = &eos {
            out.push(special(e, type_id));
        }
    };
    around("A", 0, &mut single);
    around("A", 0, &mut pair);
    around("B", 1, &mut pair);
    let mut specials = Map::new();
    for t in bos.iter().chain(eos.iter()) {
        let id = v
            .tokens
            .iter()
            .position(|x| x == t)
            .expect("bos/eos strings come from the token list");
        specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    Ok(
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}),
    )
}

/// `tokenizer_config.json` for `gguf`, as its text: the bos/eos/pad/unk strings, whether BOS/EOS
/// are added, the chat template(s), and the added tokens.
pub fn tokenizer_config_json(gguf: &GgufFile) -> Result<String> {
    let v = vocab(gguf)?;
    let pre = gguf.get_str_opt("tokenizer.ggml.pre")?;
    let default_bos = pre
        .and_then(pre_tokenizer)
        .is_some_and(|p| p.default_add_bos);
    let mut out = Map::new();
    for (key, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
    ] {
        out.insert(hf.into(), json!(special_token(gguf, &v, key)?));
    }
    out.insert(
        "add_bos_token".into(),
        json!(gguf
            .get_opt::<bool>("tokenizer.ggml.add_bos_token")?
            .unwrap_or(default_bos)),
    );
    out.insert(
        "add_eos_token".into(),
        json!(gguf
            .get_opt::<bool>("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false)),
    );
    out.insert("clean_up_tokenization_spaces".into(), json!(false));
    out.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));

    // The default template, and named ones (`tokenizer.chat_template.<name>`) as HF's list form.
    let default = gguf.get_str_opt("tokenizer.chat_template")?;
    let mut named = vec![];
    for (key, _) in gguf.metadata() {
        if let Some(name) = key.strip_prefix("tokenizer.chat_template.") {
            named.push(json!({"name": name, "template": gguf.get_str(key)?}));
        }
    }
    match (default, named.is_empty()) {
        (Some(t), true) => {
            out.insert("chat_template".into(), json!(t));
        }
        (default, false) => {
            let mut list = vec![];
            if let Some(t) = default {
                list.push(json!({"name": "default", "template": t}));
            }
            list.extend(named);
            out.insert("chat_template".into(), json!(list));
        }
        (None, true) => {}
    }

    let mut decoder = Map::new();
    for (id, (tok, &ty)) in v.tokens.iter().zip(&v.types).enumerate() {
        if ty == CONTROL || ty == USER_DEFINED {
            decoder.insert(
                id.to_string(),
                json!({
                    "content": tok,
                    "lstrip": false,
                    "normalized": false,
                    "rstrip": false,
                    "single_word": false,
                    "special": ty == CONTROL,
                }),
            );
        }
    }
    out.insert("added_tokens_decoder".into(), Value::Object(decoder));
    Ok(serde_json::to_string_pretty(&Value::Object(out)).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::config::test_gguf::{open, root};
    use std::str::FromStr;
    use tokenizers::Tokenizer;

    fn original(dir: &str) -> Tokenizer {
        Tokenizer::from_file(root().join("models").join(dir).join("tokenizer.json")).unwrap()
    }

    fn rebuilt(file: &str) -> Tokenizer {
        let text = tokenizer_json(&open(file)).unwrap_or_else(|e| panic!("{e}"));
        Tokenizer::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// Texts that exercise the split: digits, runs of spaces, newlines and tabs, contractions,
    /// punctuation, non-ASCII letters (precomposed, so NFC leaves them alone), emoji, CJK, and the
    /// added tokens where the chat template puts them.
    const TEXTS: &[&str] = &[
        "",
        "The answer is 42.",
        "12345 + 678 = 13023; 3.14159, 1e-6 and -0.5",
        "  two  spaces,\tand a tab\n\nand newlines\r\n  indented\n",
        "I've been told he's there, 'RE you sure? We'Ve a'lL",
        "Ünïcödé: café naïve Ørsted ß ĳ — “quotes” … €5",
        "🚀 rockets 😶‍🌫️ and 🦙🦙",
        "我想在apple工作1314151天～ нещо на Български",
        "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>What is 2+2?<｜Assistant｜><think>\nLet me add.\n</think>\n\n4<｜end▁of▁sentence｜>",
        "<think></think><｜User｜><｜User｜>x<｜end▁of▁sentence｜>y",
        "a<think>b</think>c <｜Assistant｜> d",
        "<｜begin▁of▁sentence｜ >not quite<think >",
        "```rust\nfn main() { println!(\"hi\"); }\n```",
        "         \n    \n",
    ];

    fn check_same_ids(file: &str, dir: &str) {
        let (want, got) = (original(dir), rebuilt(file));
        for text in TEXTS {
            for add_special in [false, true] {
                let w = want.encode(*text, add_special).unwrap();
                let g = got.encode(*text, add_special).unwrap();
                assert_eq!(
                    g.get_ids(),
                    w.get_ids(),
                    "{file}: {text:?} (add_special_tokens {add_special})"
                );
                let wd = want.decode(w.get_ids(), false).unwrap();
                let gd = got.decode(g.get_ids(), false).unwrap();
                assert_eq!(gd, wd, "{file}: decode of {text:?}");
            }
        }
        // Every token the original has keeps its id.
        for id in 0..want.get_vocab_size(true) as u32 {
            assert_eq!(got.id_to_token(id), want.id_to_token(id), "{file}: id {id}");
        }
        assert_eq!(got.get_vocab_size(true), want.get_vocab_size(true));
    }

    #[test]
    fn rebuilt_tokenizers_encode_like_the_originals() {
        for (file, dir) in [
            ("qwen2.gguf", "qwen2"),
            ("qwen2.f16.gguf", "qwen2"),
            ("llama.gguf", "llama"),
            ("qwen3.gguf", "qwen3"),
            ("deepseek_v2_lite.gguf", "deepseek_v2_lite"),
            ("deepseek_v2_grouped.f16.gguf", "deepseek_v2_grouped"),
            ("deepseek_v3_qlora.gguf", "deepseek_v3_qlora"),
        ] {
            check_same_ids(file, dir);
        }
    }

    #[test]
    fn control_tokens_are_special_and_padding_is_left_out() {
        let t = rebuilt("qwen2.gguf");
        let added = t.get_added_tokens_decoder();
        assert!(added[&0].special && added[&1].special);
        // `<｜User｜>` looks special to the converter, so it became CONTROL; `<think>` did not.
        assert!(added[&298].special);
        assert!(!added[&300].special);
        assert_eq!(t.token_to_id("[PAD302]"), None);
        assert_eq!(t.id_to_token(303), None);
    }

    /// The normalizer is not in GGUF: the fixture tokenizer's NFC is gone with "gpt-2", so a
    /// decomposed é (e + U+0301) splits differently. This documents the loss; qwen2-family names
    /// restore NFC.
    #[test]
    fn normalizer_is_not_in_gguf() {
        let (want, got) = (original("qwen3"), rebuilt("qwen3.gguf"));
        let text = "cafe\u{301}";
        let w = want.encode(text, false).unwrap();
        let g = got.encode(text, false).unwrap();
        assert_ne!(w.get_ids(), g.get_ids());
        let nfc =
            Tokenizer::from_str(&tokenizer_json_with_pre(&open("qwen3.gguf"), "qwen2").unwrap())
                .unwrap();
        assert_eq!(
            nfc.encode(text, false).unwrap().get_ids(),
            nfc.encode("café", false).unwrap().get_ids()
        );
    }

    /// The pre-tokenizer each known name maps to, on text where they differ.
    fn splits(pre: &str, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let t = Tokenizer::from_str(&tokenizer_json_with_pre(&open("qwen2.gguf"), pre).unwrap())
            .unwrap_or_else(|e| panic!("{pre}: {e}"));
        let mut s = PreTokenizedString::from(text);
        t.get_pre_tokenizer().unwrap().pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Char)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn each_known_pre_name_splits_its_own_way() {
        let text = "x 12345 can't";
        assert_eq!(splits("gpt-2", text), ["x", "Ġ12345", "Ġcan", "'t"]);
        let llama = ["x", "Ġ", "123", "45", "Ġcan", "'t"];
        for pre in ["llama-bpe", "llama3", "llama-v3"] {
            assert_eq!(splits(pre, text), llama, "{pre}");
        }
        let qwen = ["x", "Ġ", "1", "2", "3", "4", "5", "Ġcan", "'t"];
        for pre in ["qwen2", "deepseek-r1-qwen"] {
            assert_eq!(splits(pre, text), qwen, "{pre}");
        }
        // Digit runs of three, CJK apart (one piece: its bytes as byte-level characters).
        let ds = splits("deepseek-v3", "x 12345 can't 漢字ab");
        assert_eq!(ds.len(), 9, "{ds:?}");
        assert_eq!(
            ds[..7],
            ["x", "Ġ", "123", "45", "Ġcan", "'t", "Ġ"],
            "{ds:?}"
        );
        assert_eq!(ds[7].chars().count(), 6, "{ds:?}");
        assert_eq!(ds[8], "ab");
        for pre in KNOWN_PRE {
            assert!(pre_tokenizer(pre).is_some());
        }
    }

    #[test]
    fn unknown_pre_is_an_error_naming_it() {
        let e = tokenizer_json_with_pre(&open("qwen2.gguf"), "falcon3-ish").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("\"falcon3-ish\"") && e.contains("tokenizer.ggml.pre"),
            "{e}"
        );
    }

    #[test]
    fn tokenizer_config_has_special_tokens_and_the_template() {
        let g = open("deepseek_v2_lite.gguf");
        let got: Value = serde_json::from_str(&tokenizer_config_json(&g).unwrap()).unwrap();
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("models/deepseek_v2_lite/tokenizer_config.json"))
                .unwrap(),
        )
        .unwrap();
        for key in [
            "bos_token",
            "eos_token",
            "pad_token",
            "add_bos_token",
            "add_eos_token",
            "chat_template",
        ] {
            assert_eq!(got[key], want[key], "{key}");
        }
        assert_eq!(got["unk_token"], Value::Null);
        assert_eq!(
            got["added_tokens_decoder"]["300"]["content"],
            json!("<think>")
        );
    }

    #[test]
    fn named_templates_and_missing_or_foreign_vocabularies() {
        use crate::gguf::config::test_gguf::{self, Kv};
        let path =
            std::env::temp_dir().join(format!("thinkbench-tokenizer-{}.gguf", std::process::id()));
        let tokens = Kv::StrArr(vec!["a".into(), "b".into(), "ab".into()]);
        let mut kvs = vec![
            ("tokenizer.ggml.model", Kv::Str("gpt2".into())),
            ("tokenizer.ggml.tokens", tokens),
            ("tokenizer.ggml.merges", Kv::StrArr(vec!["a b".into()])),
            ("tokenizer.chat_template", Kv::Str("{{ x }}".into())),
            (
                "tokenizer.chat_template.tool_use",
                Kv::Str("{{ y }}".into()),
            ),
        ];
        test_gguf::write(&path, &kvs, &[]);
        let g = GgufFile::open(&path).unwrap();
        let c: Value = serde_json::from_str(&tokenizer_config_json(&g).unwrap()).unwrap();
        assert_eq!(
            c["chat_template"],
            json!([{"name": "default", "template": "{{ x }}"}, {"name": "tool_use", "template": "{{ y }}"}])
        );
        assert_eq!(c["bos_token"], Value::Null);
        // No tokenizer.ggml.pre: an error naming the key.
        let e = tokenizer_json(&g).unwrap_err().to_string();
        assert!(e.contains("`tokenizer.ggml.pre` is missing"), "{e}");
        // With one, the tiny vocabulary merges "a b".
        let t = Tokenizer::from_str(&tokenizer_json_with_pre(&g, "gpt-2").unwrap()).unwrap();
        assert_eq!(t.encode("ab", false).unwrap().get_ids(), [2]);
        // A SentencePiece vocabulary is refused by name.
        kvs[0] = ("tokenizer.ggml.model", Kv::Str("llama".into()));
        test_gguf::write(&path, &kvs, &[]);
        let e = tokenizer_json_with_pre(&GgufFile::open(&path).unwrap(), "gpt-2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"llama\" is not supported"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
