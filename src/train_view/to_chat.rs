//! A logged rollout as a chat session, so it can be read in the chat view with its thought folded
//! and the token inspector showing where the tokens fall.
//!
//! rollouts.jsonl keeps each completion's text, not its per-token trace: the text is tokenised
//! again with the run's tokenizer (the completion's own special tokens, `</think>` and
//! end-of-sentence, become their ids again), so the tokens and their phases are right at once.
//! Probabilities, alternatives and routing are not in the log: logprob and entropy start as NaN
//! ("not scored yet") and the app asks the engine to re-score the ids with the run's policy
//! (`runtime::score`), which fills them in. The reply keeps the rendered prompt's ids so the
//! scoring pass needs nothing else. A question asked late in a conversation opens as that
//! conversation: the earlier questions and the replies the model was shown come first (their
//! tokens unscored: the model was given them, it did not write them).

use std::path::Path;

use anyhow::Result;

use crate::runtime::engine::ModelInfo;
use crate::session::{Message, Role, Session};
use crate::text::{ChatMessage, PhaseTracker, StreamDecoder, TextCodec};
use crate::trace::{FinishReason, Phase, PromptToken, TokenRecord};
use crate::train_view::RolloutTurn;

/// `text` as unscored tokens, phases as the decode loop would mark them after `prompt_ids`.
fn unscored_tokens(codec: &TextCodec, prompt_ids: &[u32], text: &str) -> Result<Vec<TokenRecord>> {
    let ids = codec.encode_raw(text)?;
    let mut phases = PhaseTracker::new(codec.think_ids(), prompt_ids);
    let mut decoder = StreamDecoder::new();
    let mut tokens: Vec<TokenRecord> = ids
        .iter()
        .map(|&id| TokenRecord {
            id,
            text: decoder.push(codec, id),
            logprob: f32::NAN,
            top: Vec::new(),
            entropy: f32::NAN,
            phase: phases.push(id),
            routing: Vec::new(),
            forced: false,
        })
        .collect();
    if let Some(last) = tokens.last_mut() {
        last.text.push_str(&decoder.finish(codec));
    }
    Ok(tokens)
}

pub fn rollout_session(
    tokenizer_dir: &Path,
    model: Option<ModelInfo>,
    title: &str,
    earlier: &[RolloutTurn],
    prompt: &str,
    completion: &str,
    now: u64,
) -> Result<Session> {
    let codec = TextCodec::load(tokenizer_dir)?;
    let mut messages = Vec::with_capacity(2 * earlier.len() + 1);
    for t in earlier {
        messages.push(ChatMessage::user(t.prompt.clone()));
        messages.push(ChatMessage::assistant(t.reply.clone()));
    }
    messages.push(ChatMessage::user(prompt.to_string()));
    let prompt_ids = codec.encode_chat(&messages, true)?.ids;
    let tokens = unscored_tokens(&codec, &prompt_ids, completion)?;
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
    let mut parent = 0;
    for t in earlier {
        let asked = session
            .conversation
            .push(parent, Message::new(Role::User, t.prompt.clone()));
        // An earlier reply is all answer: R1's template shows a later turn no reasoning.
        let mut shown = Message::new(Role::Assistant, "");
        shown.tokens = unscored_tokens(&codec, &[], &t.reply)?
            .into_iter()
            .map(|tok| TokenRecord {
                phase: Phase::Answer,
                ..tok
            })
            .collect();
        shown.finish = Some(FinishReason::Stop);
        parent = session.conversation.push(asked, shown);
    }
    for t in session
        .conversation
        .nodes
        .iter()
        .flat_map(|n| &n.message.tokens)
    {
        session
            .token_texts
            .entry(t.id)
            .or_insert_with(|| codec.token_text(t.id));
    }
    let user = session
        .conversation
        .push(parent, Message::new(Role::User, prompt.to_string()));
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
            &g.earlier,
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

    /// A question asked late in a conversation opens as that conversation, and the thread the
    /// workbench would send from it is exactly the prompt the rollout was sampled from.
    #[test]
    fn a_conversation_rollout_opens_as_its_conversation() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("models/thinkbench-tiny");
        let codec = TextCodec::load(&dir).unwrap();
        let earlier = vec![
            RolloutTurn {
                prompt: "What is 12 + 30?".into(),
                reply: "The answer is 42.".into(),
            },
            RolloutTurn {
                prompt: "Compute 9 - 4.".into(),
                reply: "The answer is 5.".into(),
            },
        ];
        let s = rollout_session(
            &dir,
            None,
            "rollout",
            &earlier,
            "How much is 7 + 8?",
            "7+8+0=15, 5 carry 1\n</think>\n\nThe answer is 15.",
            1_796_000_000,
        )
        .unwrap();
        let thread = s.conversation.thread();
        assert_eq!(thread.len(), 6);
        let model = ModelInfo {
            eos_ids: codec.eos_ids().to_vec(),
            think_ids: codec.think_ids(),
            ..ModelInfo::default()
        };
        let shown = &s.conversation.nodes[thread[3]].message;
        assert_eq!(shown.answer_text(&model), "The answer is 5.");
        let sent = codec
            .encode_chat(&s.conversation.chat_messages(thread[4], &model), true)
            .unwrap();
        let reply = &s.conversation.nodes[thread[5]].message;
        let prompt: Vec<u32> = reply.prompt.iter().map(|t| t.id).collect();
        assert_eq!(prompt, sent.ids);
        assert!(sent
            .text
            .contains("What is 12 + 30?<｜Assistant｜>The answer is 42."));
        assert_eq!(reply.tokens.last().unwrap().phase, Phase::Answer);
    }
}
