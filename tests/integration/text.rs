//! The text side against transformers: the chat-template cases that scripts/make_fixtures.py
//! recorded with `apply_chat_template` (tests/fixtures/templates/deepseek_r1/cases.json).

use std::path::PathBuf;

use serde::Deserialize;
use thinkbench::cli::prompt::{output, PromptArgs};
use thinkbench::text::{ChatMessage, Phase, PhaseTracker, StreamDecoder, TextCodec};

use crate::common::repo;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    /// transformers' rendering.
    text: String,
    /// `apply_chat_template(tokenize=True)`: typed special strings become special ids there.
    ids: Vec<u32>,
    /// The same with typed special strings tokenised as text (what the engine must feed).
    ids_literal: Option<Vec<u32>>,
}

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/templates/deepseek_r1")
}

fn cases() -> Vec<Case> {
    let path = fixture().join("cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run `make fixtures`)", path.display()));
    let cases: Vec<Case> = serde_json::from_str(&text).expect("cases.json parses");
    assert!(!cases.is_empty(), "cases.json has no cases");
    cases
}

#[test]
fn chat_template_renders_like_transformers() {
    let codec = TextCodec::load(&fixture()).unwrap();
    for case in cases() {
        let text = codec
            .render_chat(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(text, case.text, "case {}", case.name);
    }
}

#[test]
fn chat_ids_match_transformers_with_typed_specials_as_text() {
    let codec = TextCodec::load(&fixture()).unwrap();
    let mut saw_typed = false;
    for case in cases() {
        let p = codec
            .encode_chat(&case.messages, case.add_generation_prompt)
            .unwrap();
        assert_eq!(p.text, case.text, "case {}", case.name);
        let want = case.ids_literal.as_ref().unwrap_or(&case.ids);
        assert_eq!(&p.ids, want, "case {}", case.name);
        saw_typed |= case.ids_literal.as_ref().is_some_and(|l| *l != case.ids);
        // Raw encoding of the rendered text is transformers' own tokenisation.
        assert_eq!(
            codec.encode_raw(&case.text).unwrap(),
            case.ids,
            "case {}",
            case.name
        );
        assert_eq!(codec.decode(&p.ids), case.text, "case {}", case.name);
    }
    assert!(saw_typed, "no case with typed special strings");
}

#[test]
fn streaming_and_phases_on_the_fixture() {
    let codec = TextCodec::load(&fixture()).unwrap();
    let (open, close) = codec
        .think_ids()
        .expect("the R1 vocabulary has <think> and </think>");
    for case in cases() {
        let p = codec
            .encode_chat(&case.messages, case.add_generation_prompt)
            .unwrap();
        let mut d = StreamDecoder::new();
        let mut streamed: String = p.ids.iter().map(|&id| d.push(&codec, id)).collect();
        streamed.push_str(&d.finish(&codec));
        assert_eq!(streamed, case.text, "case {}", case.name);
        // The R1 generation prompt ends inside an open <think>.
        let tracker = PhaseTracker::new(Some((open, close)), &p.ids);
        let want = if case.add_generation_prompt {
            Phase::Think
        } else {
            Phase::Answer
        };
        assert_eq!(tracker.current(), want, "case {}", case.name);
    }
}

#[test]
fn prompt_command_prints_text_and_ids() {
    let case = cases()
        .into_iter()
        .find(|c| c.ids_literal.as_ref().is_some_and(|l| *l != c.ids))
        .expect("a case with typed special strings");
    let dir = tempfile::tempdir().unwrap();
    let messages = dir.path().join("messages.json");
    std::fs::write(
        &messages,
        serde_json::json!({ "messages": case.messages }).to_string(),
    )
    .unwrap();
    let args = PromptArgs {
        model: fixture(),
        messages: messages.clone(),
        no_generation_prompt: !case.add_generation_prompt,
        json: true,
    };
    let out = output(&args).unwrap();
    assert!(
        out.ends_with('\n') && out.matches('\n').count() == 1,
        "{out:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["text"], case.text.as_str());
    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
    assert_eq!(Some(ids), case.ids_literal);

    let plain = output(&PromptArgs {
        json: false,
        ..args
    })
    .unwrap();
    assert!(plain.starts_with(&case.text), "{plain:?}");

    let bad = PromptArgs {
        model: fixture(),
        messages: dir.path().join("nope.json"),
        no_generation_prompt: false,
        json: true,
    };
    let e = format!("{:#}", output(&bad).unwrap_err());
    assert_eq!(
        e,
        format!("{}: missing", dir.path().join("nope.json").display())
    );
}
