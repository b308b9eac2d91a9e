//! A logged rollout as a chat session, so it can be read in the chat view with its thought folded
//! and the token inspector showing where the tokens fall.
//!
//! rollouts.jsonl keeps each completion's text, not its per-token trace: the text is tokenised
//! again with the run's tokenizer (the completion's own special tokens, `</think>` and
//! end-of-sentence, become their ids again), so the tokens and their phases are right at once.
//! Probabilities, alternatives and routing are not in the log: logprob and entropy start as NaN
//! ("not scored yet") and the app asks the engine to re-score the ids with the run's policy
//! (`runtime::score`), which fills them in. The reply keeps the rendered prompt's ids so the
//! scoring pass needs nothing else.

use std::path::Path;

use anyhow::Result;

use crate::runtime::engine::ModelInfo;
use crate::session::{Message, Role, Session};
use crate::text::{ChatMessage, PhaseTracker, StreamDecoder, TextCodec};
use crate::trace::{FinishReason, PromptToken, TokenRecord};

pub fn rollout_session(
    tokenizer_dir: &Path,
    model: Option<ModelInfo>,
    title: &str,
    prompt: &str,
    completion: &str,
    now: u64,
) -> Result<Session> {
    let codec = TextCodec::load(tokenizer_dir)?;
    let prompt_ids = codec
        .encode_chat(&[ChatMessage::user(prompt.to_string())], true)?
        .ids;
    let ids = codec.encode_raw(completion)?;
    let mut phases = PhaseTracker::new(codec.think_ids(), &prompt_ids);
    let mut decoder = StreamDecoder::new();
    let mut tokens: Vec<TokenRecord> = ids
        .iter()
        .map(|&id| TokenRecord {
            id,
            text: decoder.push(&codec, id),
            logprob: f32::NAN,
            top: Vec::new(),
            entropy: f32::NAN,
            phase: phases.push(id),
            routing: Vec::new(),
            forced: false,
        })
        .collect();
    if let Some(last) = tokens.last_mut() {
        last.text.push_str(&decoder.finish(&codec));
    }
    let ended = tokens
        .last()
        .is_some_and(|t| codec.eos_ids().contains(&t.id));
    let mut session = Session::new(now);
    session.name = title.to_string();
    session.model = model;
    for t in &tokens {
        session
            .token_texts
            .entry(t.id)
            .or_insert_with(|| codec.token_text(t.id));
    }
    let user = session
        .conversation
        .push(0, Message::new(Role::User, prompt.to_string()));
    let mut reply = Message::new(Role::Assistant, "");
    reply.prompt = prompt_ids
        .iter()
        .map(|&id| PromptToken {
            id,
            routing: Vec::new(),
        })
        .collect();
    reply.tokens = tokens;
    reply.finish = Some(if ended {
        FinishReason::Stop
    } else {
        FinishReason::Length
    });
    session.conversation.push(user, reply);
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Phase;

    #[test]
    fn a_fixture_rollout_becomes_a_reply_with_its_thought_and_answer() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let line =
            std::fs::read_to_string(root.join("tests/fixtures/train_run/rollouts.jsonl")).unwrap();
        let g: crate::train_view::RolloutGroup =
            serde_json::from_str(line.lines().next().unwrap()).unwrap();
        let c = &g.completions[0];
        let s = rollout_session(
            &root.join("models/thinkbench-tiny"),
            None,
            "rollout",
            &g.prompt,
            &c.text,
            1_796_000_000,
        )
        .unwrap();
        let thread = s.conversation.thread();
        assert_eq!(thread.len(), 2);
        let reply = &s.conversation.nodes[thread[1]].message;
        assert_eq!(
            reply.tokens.len(),
            c.tokens,
            "the same tokens the trainer counted"
        );
        assert_eq!(reply.finish, Some(FinishReason::Stop));
        assert_eq!(reply.tokens[0].phase, Phase::Think);
        assert_eq!(reply.tokens.last().unwrap().phase, Phase::Answer);
        let text: String = reply.tokens.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(text, c.text);
        assert!(reply.tokens.iter().all(|t| t.logprob.is_nan()));
        // The rendered prompt's ids travel with the reply, for the scoring pass.
        assert_eq!(
            reply.prompt.first().map(|t| t.id),
            Some(0),
            "starts with BOS"
        );
        assert!(reply.prompt.len() > 3);
    }
}
