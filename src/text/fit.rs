//! A conversation that fits the model's context.
//!
//! When the thread plus the reply's token budget no longer fit, the oldest whole turns (a
//! question and the reply to it) are left out, as chat front-ends do: the model then answers the
//! newest question from the turns it can see, never from a prompt cut mid-message, and the caller
//! says how many turns were left out. System messages at the start always stay.

use super::{ChatMessage, Result, TextCodec};

/// The rendered prompt that fits and what it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The prompt ids (chat template with the generation prompt).
    pub ids: Vec<u32>,
    /// Earlier turns left out, oldest first.
    pub dropped_turns: usize,
}

/// Renders `messages` (ending with the user's question) with as many of the newest earlier turns
/// as leave `reserve` tokens of the `context` free (`reserve`: the reply's budget, plus any
/// tokens already generated that follow the prompt). When even the question alone leaves less
/// than that, every earlier turn is left out and the caller decides what the rest is worth.
pub fn fit_chat(
    codec: &TextCodec,
    messages: &[ChatMessage],
    context: usize,
    reserve: usize,
) -> Result<Fitted> {
    let system = messages.iter().take_while(|m| m.role == "system").count();
    // Where each turn starts: its user message. The last one is the question being answered.
    let starts: Vec<usize> = (system..messages.len())
        .filter(|&i| messages[i].role == "user")
        .collect();
    let mut last = None;
    for (dropped, &from) in starts.iter().enumerate() {
        let kept: Vec<ChatMessage> = messages[..system]
            .iter()
            .chain(&messages[from..])
            .cloned()
            .collect();
        let ids = codec.encode_chat(&kept, true)?.ids;
        let fits = ids.len() + reserve <= context;
        last = Some(Fitted {
            ids,
            dropped_turns: dropped,
        });
        if fits {
            break;
        }
    }
    match last {
        Some(f) => Ok(f),
        // No user message at all: nothing to leave out.
        None => Ok(Fitted {
            ids: codec.encode_chat(messages, true)?.ids,
            dropped_turns: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn codec() -> TextCodec {
        TextCodec::load(Path::new("models/thinkbench-tiny")).unwrap()
    }

    fn thread(turns: usize) -> Vec<ChatMessage> {
        let mut m = vec![ChatMessage::system("Be brief.")];
        for i in 0..turns {
            m.push(ChatMessage::user(format!("What is {i}1 + 2{i}?")));
            m.push(ChatMessage::assistant(format!("The answer is {i}{i}.")));
        }
        m.push(ChatMessage::user("Compute 4821 - 397."));
        m
    }

    #[test]
    fn everything_is_kept_while_it_fits() {
        let c = codec();
        let m = thread(3);
        let whole = c.encode_chat(&m, true).unwrap().ids;
        let f = fit_chat(&c, &m, 512, 512 - whole.len()).unwrap();
        assert_eq!(f.dropped_turns, 0);
        assert_eq!(f.ids, whole);
    }

    #[test]
    fn the_oldest_whole_turns_go_first_and_the_system_prompt_stays() {
        let c = codec();
        let m = thread(3);
        let whole = c.encode_chat(&m, true).unwrap().ids.len();
        // The prompt without the first turn, rendered independently of fit_chat.
        let mut without_first = m.clone();
        without_first.drain(1..3);
        let want = c.encode_chat(&without_first, true).unwrap().ids;
        assert!(want.len() < whole);
        // One token too many for the whole thread, exactly enough without its first turn.
        let f = fit_chat(&c, &m, 512, 512 - want.len()).unwrap();
        assert_eq!(f.dropped_turns, 1);
        assert_eq!(f.ids, want);
        // No room at all: only the system prompt and the question are left.
        let f = fit_chat(&c, &m, 512, 512).unwrap();
        assert_eq!(f.dropped_turns, 3);
        let alone = [m[0].clone(), m[7].clone()];
        assert_eq!(f.ids, c.encode_chat(&alone, true).unwrap().ids);
    }
}
