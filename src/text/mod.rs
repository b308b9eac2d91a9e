//! Strings <-> token ids: the model directory's tokenizer, its chat template and its generation
//! defaults, plus the two small state machines the decode loop needs on the text side (a streaming
//! detokenizer and the think/answer phase tracker). Nothing here touches `tch`.
//!
//! - [`TextCodec`] loads `tokenizer.json`, `tokenizer_config.json` and the optional
//!   `generation_config.json` of a model directory and turns text and chats into ids and back.
//! - [`ChatTemplate`] renders a chat template exactly as transformers' `apply_chat_template` does.
//! - [`StreamDecoder`] turns ids into text one token at a time without splitting a character.
//! - [`PhaseTracker`] labels generated ids `think` or `answer` from the `<think>`/`</think>` ids.
//! - [`fit_chat`] leaves out a conversation's oldest turns when it and the reply outgrow the context.

pub mod codec;
pub mod detok;
pub mod fit;
pub mod generation_config;
pub mod phase;
pub mod template;
pub mod tokenizer_config;

pub use codec::{ChatPrompt, TextCodec};
pub use detok::StreamDecoder;
pub use fit::{fit_chat, Fitted};
pub use generation_config::GenerationDefaults;
pub use phase::{Phase, PhaseTracker};
pub use template::{load_messages, parse_messages, ChatMessage, ChatTemplate};
pub use tokenizer_config::TokenizerConfig;

use std::path::{Path, PathBuf};

/// Everything that can go wrong on the text side. Each variant displays as one line that names the
/// file (or template) at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TextError {
    /// A file the model directory must have is not there.
    #[error("{}: missing", .0.display())]
    Missing(PathBuf),
    /// The file exists but could not be read.
    #[error("{}: cannot read: {msg}", path.display())]
    Read { path: PathBuf, msg: String },
    /// The file is not JSON at all.
    #[error("{}: invalid JSON at line {line}, column {column}: {msg}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        msg: String,
    },
    /// The file is JSON but its content is not what it should be.
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    /// The chat template does not parse as Jinja.
    #[error("{origin}: chat_template is not valid Jinja: {msg}")]
    TemplateSyntax { origin: String, msg: String },
    /// The chat template parsed but rendering failed (including its own `raise_exception`).
    #[error("{origin}: chat_template failed to render: {msg}")]
    Render { origin: String, msg: String },
    /// The model directory ships no chat template.
    #[error(
        "{}: no chat_template (and no chat_template.jinja next to it); use raw text instead",
        .0.display()
    )]
    NoChatTemplate(PathBuf),
    /// The tokenizer failed on some input.
    #[error("{}: {msg}", path.display())]
    Tokenize { path: PathBuf, msg: String },
}

/// Result alias for the text module.
pub type Result<T, E = TextError> = std::result::Result<T, E>;

/// Collapses a possibly multi-line message from a library into one line.
pub(crate) fn one_line(msg: impl std::fmt::Display) -> String {
    let s = msg.to_string();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a whole text file; a missing file is [`TextError::Missing`].
pub(crate) fn read_text(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TextError::Missing(path.into())),
        Err(e) => Err(TextError::Read {
            path: path.into(),
            msg: one_line(e),
        }),
    }
}

/// Parses JSON text into `T`, telling a syntax error (with its line) from a shape error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| json_error(path, &e))
}

/// Turns a serde_json error into the one-line error for `path`.
pub(crate) fn json_error(path: &Path, e: &serde_json::Error) -> TextError {
    use serde_json::error::Category;
    // serde_json appends " at line L column C" to its message; we print the position ourselves.
    let full = e.to_string();
    let msg = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    match e.classify() {
        Category::Syntax | Category::Eof => TextError::Json {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            msg: one_line(msg),
        },
        Category::Data | Category::Io => TextError::Invalid {
            path: path.into(),
            msg: format!(
                "unexpected content at line {}, column {}: {}",
                e.line(),
                e.column(),
                one_line(msg)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_one_line_and_name_the_file() {
        let p = Path::new("/m/tokenizer.json");
        let e = parse_json::<serde_json::Value>(p, "{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("/m/tokenizer.json: invalid JSON at line 3, column 3: "),
            "{s}"
        );
        assert!(!s.contains('\n'));

        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u32,
        }
        let e = parse_json::<T>(p, "{\"a\": \"x\"}").unwrap_err();
        assert!(matches!(e, TextError::Invalid { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("/m/tokenizer.json: unexpected content at line 1"));
    }

    #[test]
    fn missing_file_is_named() {
        let e = read_text(Path::new("/nonexistent-dir/tokenizer.json")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent-dir/tokenizer.json: missing");
    }
}
