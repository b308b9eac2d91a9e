//! Saved sessions: the conversation tree (every branch), the settings it was generated with, the
//! model it came from, and the full per-token trace, so the inspectors work on a reopened session
//! without running the model.
//!
//! Files are JSON, written atomically: a temporary file in the same folder, flushed to disk, then
//! renamed over the old one, so a crash or a dropped SSH connection leaves either the old file or
//! the new one, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::engine::ModelInfo;
use crate::runtime::SamplingParams;
use crate::trace::{FinishReason, GenStats, Phase, PromptToken, TokenRecord};

/// The format tag written into every file.
pub const FORMAT: &str = "thinkbench-session/1";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path}: not a thinkbench session: {msg}")]
    Format { path: String, msg: String },
}

impl SessionError {
    fn io(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The invisible root every first message hangs from.
    Root,
    User,
    Assistant,
}

/// One message of the conversation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// What the user typed (empty for assistant messages: their text is in `tokens`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Every generated token with its alternatives, entropy, phase and routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenRecord>,
    /// The prompt this reply was generated from, with its routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt: Vec<PromptToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<GenStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds from the first token to the end of the thought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think_secs: Option<f64>,
    /// Seconds from the request to the last token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_secs: Option<f64>,
    /// The settings this reply was generated with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    /// The oldest turns of the thread left out of this reply's prompt because the conversation
    /// and the reply's budget outgrew the model's context (0: the model saw everything).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_turns: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tokens: Vec::new(),
            prompt: Vec::new(),
            finish: None,
            stats: None,
            error: None,
            think_secs: None,
            gen_secs: None,
            settings: None,
            dropped_turns: 0,
        }
    }

    /// Tokens that are neither the thought's tags nor an end-of-sequence id.
    fn visible<'a>(
        &'a self,
        model: &'a ModelInfo,
        phase: Phase,
    ) -> impl Iterator<Item = &'a TokenRecord> + 'a {
        self.tokens.iter().filter(move |t| {
            t.phase == phase
                && !model.eos_ids.contains(&t.id)
                && model.think_ids.is_none_or(|(o, c)| t.id != o && t.id != c)
        })
    }

    /// The reply without its reasoning: what is shown as the answer and sent back to the model.
    pub fn answer_text(&self, model: &ModelInfo) -> String {
        if self.role != Role::Assistant {
            return self.content.clone();
        }
        let s: String = self
            .visible(model, Phase::Answer)
            .map(|t| t.text.as_str())
            .collect();
        s.trim().to_string()
    }

    /// The chain of thought.
    pub fn thought_text(&self, model: &ModelInfo) -> String {
        let s: String = self
            .visible(model, Phase::Think)
            .map(|t| t.text.as_str())
            .collect();
        s.trim().to_string()
    }

    /// Reasoning tokens (tags included, as the thinking budget counts them).
    pub fn thought_tokens(&self) -> usize {
        self.tokens
            .iter()
            .filter(|t| t.phase == Phase::Think)
            .count()
    }

    /// The thought was closed by the thinking budget rather than by the model.
    pub fn thought_cut(&self) -> Option<usize> {
        self.tokens.iter().position(|t| t.forced)
    }
}

/// A node of the conversation tree: a message, its parent, and its alternatives' order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub parent: Option<usize>,
    #[serde(default)]
    pub children: Vec<usize>,
    /// Which child the visible thread follows.
    #[serde(default)]
    pub active: usize,
    pub message: Message,
}

/// Every message ever written in the session. Editing or regenerating adds a sibling instead of
/// replacing, so no branch is ever lost; the visible thread follows each node's `active` child
/// from the root (node 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub nodes: Vec<Node>,
}

impl Default for Conversation {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                parent: None,
                children: Vec::new(),
                active: 0,
                message: Message::new(Role::Root, ""),
            }],
        }
    }
}

impl Conversation {
    /// The visible thread, root excluded.
    pub fn thread(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(&next) = self.nodes[at].children.get(self.nodes[at].active) {
            out.push(next);
            at = next;
        }
        out
    }

    /// Adds `message` as the newest child of `parent` and makes it the active one.
    pub fn push(&mut self, parent: usize, message: Message) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            parent: Some(parent),
            children: Vec::new(),
            active: 0,
            message,
        });
        let p = &mut self.nodes[parent];
        p.children.push(id);
        p.active = p.children.len() - 1;
        id
    }

    /// `(position, count)` of `node` among its siblings, 1-based.
    pub fn sibling_pos(&self, node: usize) -> (usize, usize) {
        match self.nodes[node].parent {
            Some(p) => {
                let c = &self.nodes[p].children;
                (c.iter().position(|&x| x == node).unwrap_or(0) + 1, c.len())
            }
            None => (1, 1),
        }
    }

    /// Makes the sibling `delta` steps from `node` the active one; returns it.
    pub fn switch_sibling(&mut self, node: usize, delta: isize) -> usize {
        let Some(p) = self.nodes[node].parent else {
            return node;
        };
        let parent = &mut self.nodes[p];
        let n = parent.children.len() as isize;
        let at = parent.children.iter().position(|&x| x == node).unwrap_or(0) as isize;
        let to = (at + delta).clamp(0, n - 1) as usize;
        parent.active = to;
        parent.children[to]
    }

    /// Messages of the thread up to and including `last`, as the chat template wants them.
    pub fn chat_messages(&self, last: usize, model: &ModelInfo) -> Vec<crate::text::ChatMessage> {
        let mut path = Vec::new();
        let mut at = Some(last);
        while let Some(n) = at {
            if self.nodes[n].message.role != Role::Root {
                path.push(n);
            }
            at = self.nodes[n].parent;
        }
        path.reverse();
        path.iter()
            .map(|&n| {
                let m = &self.nodes[n].message;
                match m.role {
                    Role::User => crate::text::ChatMessage::user(m.content.clone()),
                    _ => crate::text::ChatMessage::assistant(m.answer_text(model)),
                }
            })
            .collect()
    }

    /// Generated tokens in the whole tree.
    pub fn token_count(&self) -> usize {
        self.nodes.iter().map(|n| n.message.tokens.len()).sum()
    }
}

/// Generation settings the user can change in the settings panel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Reasoning tokens before the thought is closed; `None`: unlimited.
    pub think_budget: Option<usize>,
    /// Alternatives recorded per token.
    pub top_logprobs: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 1024,
            think_budget: None,
            top_logprobs: 8,
        }
    }
}

/// A whole saved session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub format: String,
    pub id: String,
    pub name: String,
    pub created: String,
    pub updated: String,
    /// The model that generated the replies (none before the first reply).
    #[serde(default)]
    pub model: Option<ModelInfo>,
    pub settings: Settings,
    pub conversation: Conversation,
    /// Text of every token id the trace mentions (chosen and alternatives), so the token inspector
    /// can show alternatives without the tokenizer.
    #[serde(default)]
    pub token_texts: BTreeMap<u32, String>,
}

impl Session {
    /// A fresh, empty session whose id comes from `now` (seconds since the Unix epoch).
    pub fn new(now: u64) -> Self {
        let stamp = timestamp(now);
        Self {
            format: FORMAT.into(),
            id: session_id(now),
            name: String::new(),
            created: stamp.clone(),
            updated: stamp,
            model: None,
            settings: Settings::default(),
            conversation: Conversation::default(),
            token_texts: BTreeMap::new(),
        }
    }

    /// The name shown in lists: the given one, else the first user message.
    pub fn title(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        self.conversation
            .nodes
            .iter()
            .find(|n| n.message.role == Role::User)
            .map(|n| first_line(&n.message.content, 48))
            .unwrap_or_else(|| "new session".into())
    }

    pub fn file_name(&self) -> String {
        format!("{}.json", self.id)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("sessions serialise")
    }

    pub fn from_json(path: &Path, text: &str) -> Result<Self, SessionError> {
        let s: Session = serde_json::from_str(text).map_err(|e| SessionError::Format {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        if s.format != FORMAT {
            return Err(SessionError::Format {
                path: path.display().to_string(),
                msg: format!("format is {:?}, expected {FORMAT:?}", s.format),
            });
        }
        if s.conversation.nodes.is_empty()
            || s.conversation.nodes.iter().any(|n| {
                n.children
                    .iter()
                    .any(|&c| c >= s.conversation.nodes.len() || c == 0)
            })
        {
            return Err(SessionError::Format {
                path: path.display().to_string(),
                msg: "the conversation tree is broken".into(),
            });
        }
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, SessionError> {
        let text = std::fs::read_to_string(path).map_err(|e| SessionError::io(path, e))?;
        Self::from_json(path, &text)
    }

    /// Writes the session to `dir/<id>.json` atomically; returns the path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf, SessionError> {
        std::fs::create_dir_all(dir).map_err(|e| SessionError::io(dir, e))?;
        let path = dir.join(self.file_name());
        write_atomic(&path, self.to_json().as_bytes())?;
        Ok(path)
    }

    /// The visible thread as Markdown: the thought folded into a `<details>` block.
    pub fn to_markdown(&self) -> String {
        let model = self.model.clone().unwrap_or_default();
        let mut out = format!("# {}\n\n", self.title());
        if !model.id.is_empty() {
            out.push_str(&format!(
                "*Model: {} ({}, {}), temperature {}, top-p {}.*\n\n",
                model.id,
                model.model_type,
                model.checkpoint_hash,
                self.settings.sampling.temperature,
                self.settings.sampling.top_p
            ));
        }
        for id in self.conversation.thread() {
            let m = &self.conversation.nodes[id].message;
            match m.role {
                Role::User => {
                    out.push_str("## User\n\n");
                    out.push_str(m.content.trim());
                    out.push_str("\n\n");
                }
                Role::Assistant => {
                    out.push_str("## Assistant\n\n");
                    let thought = m.thought_text(&model);
                    if !thought.is_empty() {
                        out.push_str(&format!(
                            "<details><summary>Thought for {} tokens</summary>\n\n{}\n\n</details>\n\n",
                            m.thought_tokens(),
                            thought
                        ));
                    }
                    out.push_str(&m.answer_text(&model));
                    out.push_str("\n\n");
                    if let Some(e) = &m.error {
                        out.push_str(&format!("*Error: {e}*\n\n"));
                    }
                }
                Role::Root => {}
            }
        }
        out
    }
}

/// One line of the session list.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSummary {
    pub path: PathBuf,
    pub id: String,
    pub title: String,
    pub updated: String,
    pub messages: usize,
    pub model: String,
}

/// The sessions in `dir`, newest first. Files that do not parse are listed with their error as
/// the title rather than hidden.
pub fn list(dir: &Path) -> Vec<SessionSummary> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<SessionSummary> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|path| match Session::load(&path) {
            Ok(s) => SessionSummary {
                id: s.id.clone(),
                title: s.title(),
                updated: s.updated.clone(),
                messages: s.conversation.thread().len(),
                model: s.model.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                path,
            },
            Err(e) => SessionSummary {
                id: path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                title: format!("(unreadable: {e})"),
                updated: String::new(),
                messages: 0,
                model: String::new(),
                path,
            },
        })
        .collect();
    out.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
    out
}

/// Writes `bytes` to `path` through a temporary file in the same folder: write, fsync, rename,
/// then fsync the folder so the rename itself survives a power cut.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SessionError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SessionError::io(path, e)
    })
}

/// The default folder for a user's sessions: the platform data dir (e.g.
/// `~/.local/share/thinkbench/sessions` on Linux).
pub fn default_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "thinkbench").map(|d| d.data_dir().join("sessions"))
}

fn first_line(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max - 1).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for `secs` since the Unix epoch.
pub fn timestamp(secs: u64) -> String {
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A file-name-safe, sortable id: `20261128-131800`.
pub fn session_id(secs: u64) -> String {
    let t = timestamp(secs);
    t.replace(['-', ':'], "")
        .trim_end_matches('Z')
        .replace('T', "-")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 12:34:56 UTC (a leap day).
        assert_eq!(timestamp(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(session_id(951_827_696), "20000229-123456");
    }

    #[test]
    fn tree_keeps_every_branch() {
        let mut c = Conversation::default();
        let u = c.push(0, Message::new(Role::User, "hi"));
        let a1 = c.push(u, Message::new(Role::Assistant, ""));
        let a2 = c.push(u, Message::new(Role::Assistant, ""));
        assert_eq!(c.thread(), vec![u, a2]);
        assert_eq!(c.sibling_pos(a2), (2, 2));
        assert_eq!(c.switch_sibling(a2, -1), a1);
        assert_eq!(c.thread(), vec![u, a1]);
        assert_eq!(c.switch_sibling(a1, -5), a1, "clamped at the first sibling");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn rejects_foreign_json() {
        let e = Session::from_json(Path::new("x.json"), "{\"a\": 1}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("x.json: not a thinkbench session"));
        let mut s = Session::new(0);
        s.format = "other/2".into();
        let e = Session::from_json(Path::new("x.json"), &s.to_json()).unwrap_err();
        assert!(e.to_string().contains("expected"), "{e}");
    }
}
