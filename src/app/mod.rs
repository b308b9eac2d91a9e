//! The workbench's state and its one entry point, [`App::update`]: an [`Action`] in, the
//! [`Command`]s the runner must carry out. No I/O, no tch, no drawing: everything here is plain
//! data, so the whole interface can be driven and checked in tests without a terminal or a model.

pub mod input;
pub mod keymap;
pub mod sample;
pub mod settings;
pub mod train;

use std::collections::HashSet;
use std::path::PathBuf;

use crate::runtime::engine::{EngineEvent, GenSpec, ModelInfo};
use crate::session::{Message, Role, Session, SessionSummary, Settings};
use crate::trace::{Phase, TokenRecord};

pub use input::Input;
pub use keymap::Key;
pub use settings::SettingsPanel;
pub use train::{TrainAction, TrainCommand, TrainPane, TrainTab};

/// What can happen to the app: input, engine events, results of commands, and intents.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A key press (mapped through the key map for the current focus).
    Key(Key),
    /// Text pasted into the terminal.
    Paste(String),
    /// The clock, in seconds since the runner started (sent before other actions).
    Clock(f64),
    Engine(EngineEvent),
    /// The session list, after `Command::ListSessions`.
    Sessions(Vec<SessionSummary>),
    /// A session was read from disk (after `Command::OpenSession`).
    Opened(Box<Session>),
    /// A one-line message for the status line (saves, exports, errors of commands).
    Notice(String),

    // Intents, which keys map to.
    Send,
    Stop,
    Quit,
    FocusInput,
    FocusTranscript,
    ToggleFocus,
    ToggleHelp,
    ToggleRouting,
    ToggleTokens,
    ToggleSettings,
    ToggleSessions,
    /// Fold or unfold the thought of the selected message.
    ToggleThought,
    /// Moves the token cursor by this many tokens.
    Cursor(isize),
    CursorStart,
    CursorEnd,
    /// Selects the message this many steps away in the thread.
    SelectMessage(isize),
    /// Scrolls the transcript by this many lines (positive: up, towards older messages).
    Scroll(isize),
    Regenerate,
    /// Regenerates the last reply (from anywhere).
    RegenerateLast,
    Edit,
    /// Shows the sibling this many steps away (another branch).
    Sibling(isize),
    KeepThinking,
    /// Chooses the MoE layer this many steps away for colouring and the load view.
    Layer(isize),
    ToggleExpertColour,
    CycleRoutingView,
    Copy,
    Export,
    NewSession,
    OpenSession(PathBuf),
    RenameSession(PathBuf, String),
    DeleteSession(PathBuf),
    /// Switch between the chat and the Train tab.
    ToggleView,
    /// The Train tab's intents and background results.
    Train(TrainAction),
}

/// What the runner must do for the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Generate(GenSpec),
    Cancel(u64),
    /// Save the session now.
    Save,
    ListSessions,
    OpenSession(PathBuf),
    DeleteSession(PathBuf),
    /// Rename a saved session that is not the open one.
    RenameSession {
        path: PathBuf,
        name: String,
    },
    /// Write the visible thread as Markdown.
    Export,
    /// Put text on the clipboard (OSC 52).
    Copy(String),
    /// A message became final (inline mode prints it into the scrollback).
    Transcribe(usize),
    Quit,
    Train(TrainCommand),
}

/// The two screens of the workbench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Chat,
    Train,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Input,
    Transcript,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EngineState {
    /// No model was asked for: sessions can be read, not continued.
    Absent,
    Loading(String),
    Ready,
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingView {
    /// The selected token's layer × expert map.
    Token,
    /// Expert load per layer over the whole message, thinking vs answer.
    Load,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Inspector {
    pub routing: bool,
    pub tokens: bool,
    pub view: RoutingView,
    /// Index into the model's MoE layers.
    pub layer: usize,
    /// Colour the text by the top expert of `layer`.
    pub colour: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionsPanel {
    pub selected: usize,
    /// Typing a new name for the selected session.
    pub rename: Option<Input>,
    /// Asked once to confirm deleting the selected session.
    pub confirm_delete: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    Help,
    Settings(SettingsPanel),
    Sessions(SessionsPanel),
}

/// The reply being generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Generating {
    pub job: u64,
    pub node: usize,
    pub started: f64,
    /// When the prompt had been processed.
    pub prompt_done: Option<f64>,
    /// Thinking time carried over from the message this one continues.
    pub think_base: f64,
    /// Prompt tokens served from the cache.
    pub reused: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub text: String,
    pub until: f64,
}

/// Settings given on the command line: they win over the model's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub temperature: Option<f32>,
    pub max_tokens: Option<usize>,
    pub think_budget: Option<usize>,
    pub seed: Option<u64>,
}

#[derive(Clone)]
pub struct App {
    pub session: Session,
    /// The loaded model (`None` until the engine is ready, or when there is none).
    pub model: Option<ModelInfo>,
    pub engine: EngineState,
    pub overrides: Overrides,
    pub focus: Focus,
    pub input: Input,
    /// The user message being edited (its text is in the input box).
    pub editing: Option<usize>,
    /// The draft put aside while editing.
    draft: String,
    pub generating: Option<Generating>,
    next_job: u64,
    /// The selected message (a node of the visible thread).
    pub selected: Option<usize>,
    /// Token index in the selected message.
    pub cursor: usize,
    /// The cursor follows the newest token while the selected message streams.
    pub cursor_follow: bool,
    /// Lines scrolled up from the bottom of the transcript (when not following the cursor).
    pub scroll: usize,
    /// The view keeps the cursor's line visible (else it shows `scroll`).
    pub view_follows_cursor: bool,
    /// Messages whose thought is unfolded.
    pub expanded: HashSet<usize>,
    pub inspector: Inspector,
    pub popup: Option<Popup>,
    /// Lines the key map is scrolled by (on short terminals).
    pub help_scroll: usize,
    pub sessions: Vec<SessionSummary>,
    pub notice: Option<Notice>,
    pub now: f64,
    /// Something changed since the session was last saved.
    pub unsaved: bool,
    pub quit: bool,
    pub view: View,
    pub train: TrainTab,
}

const NOTICE_SECS: f64 = 4.0;

impl App {
    pub fn new(session: Session, engine: EngineState, overrides: Overrides) -> Self {
        let mut app = Self {
            session,
            model: None,
            engine,
            overrides,
            focus: Focus::Input,
            input: Input::default(),
            editing: None,
            draft: String::new(),
            generating: None,
            next_job: 1,
            selected: None,
            cursor: 0,
            cursor_follow: true,
            scroll: 0,
            view_follows_cursor: false,
            expanded: HashSet::new(),
            inspector: Inspector {
                routing: false,
                tokens: false,
                view: RoutingView::Token,
                layer: 0,
                colour: false,
            },
            popup: None,
            help_scroll: 0,
            sessions: Vec::new(),
            notice: None,
            now: 0.0,
            unsaved: false,
            quit: false,
            view: View::Chat,
            train: TrainTab::default(),
        };
        app.apply_overrides();
        app.select_last();
        app
    }

    /// The model whose trace is on screen: the loaded one, else the session's.
    pub fn model_info(&self) -> &ModelInfo {
        static NONE: std::sync::OnceLock<ModelInfo> = std::sync::OnceLock::new();
        self.model
            .as_ref()
            .or(self.session.model.as_ref())
            .unwrap_or_else(|| NONE.get_or_init(ModelInfo::default))
    }

    pub fn message(&self, node: usize) -> &Message {
        &self.session.conversation.nodes[node].message
    }

    /// The selected message if it is a reply (what the inspectors look at).
    pub fn inspected(&self) -> Option<(usize, &Message)> {
        let node = self.selected?;
        let m = self.message(node);
        (m.role == Role::Assistant).then_some((node, m))
    }

    /// The token under the cursor.
    pub fn cursor_token(&self) -> Option<&TokenRecord> {
        let (_, m) = self.inspected()?;
        m.tokens
            .get(self.cursor.min(m.tokens.len().saturating_sub(1)))
    }

    /// Tokens the last reply of the thread used of the model's context.
    pub fn context_used(&self) -> usize {
        self.session
            .conversation
            .thread()
            .iter()
            .rev()
            .map(|&n| self.message(n))
            .find(|m| m.role == Role::Assistant && !m.prompt.is_empty())
            .map_or(0, |m| m.prompt.len() + m.tokens.len())
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.notice = Some(Notice {
            text: text.into(),
            until: self.now + NOTICE_SECS,
        });
    }

    fn apply_overrides(&mut self) {
        let s = &mut self.session.settings;
        if let Some(t) = self.overrides.temperature {
            s.sampling.temperature = t;
        }
        if let Some(m) = self.overrides.max_tokens {
            s.max_tokens = m;
        }
        if let Some(b) = self.overrides.think_budget {
            s.think_budget = Some(b);
        }
        if let Some(seed) = self.overrides.seed {
            s.sampling.seed = seed;
        }
    }

    /// Settings from the model's generation_config.json, then the command line's.
    pub fn default_settings(&self) -> Settings {
        let mut s = Settings::default();
        if let Some(m) = self.model.as_ref().or(self.session.model.as_ref()) {
            s.sampling = m.sampling.clone();
            if let Some(n) = m.max_new_tokens {
                s.max_tokens = n;
            }
        }
        if let Some(t) = self.overrides.temperature {
            s.sampling.temperature = t;
        }
        if let Some(m) = self.overrides.max_tokens {
            s.max_tokens = m;
        }
        if let Some(b) = self.overrides.think_budget {
            s.think_budget = Some(b);
        }
        if let Some(seed) = self.overrides.seed {
            s.sampling.seed = seed;
        }
        s
    }

    fn select_last(&mut self) {
        self.selected = self.session.conversation.thread().last().copied();
        self.cursor = self
            .selected
            .map_or(0, |n| self.message(n).tokens.len().saturating_sub(1));
        self.cursor_follow = true;
    }

    /// The single entry point: applies `action` and returns what the runner must do.
    pub fn update(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::Key(key) => match keymap::handle(self, key) {
                Some(a) => self.update(a),
                None => Vec::new(),
            },
            Action::Paste(text) => {
                if let Some(Popup::Settings(p)) = &mut self.popup {
                    p.paste(&text);
                } else {
                    self.focus = Focus::Input;
                    self.input.insert_str(&text);
                }
                Vec::new()
            }
            Action::Clock(t) => {
                self.now = t;
                if self.notice.as_ref().is_some_and(|n| n.until <= t) {
                    self.notice = None;
                }
                Vec::new()
            }
            Action::Engine(ev) => self.on_engine(ev),
            Action::Sessions(list) => {
                self.sessions = list;
                if let Some(Popup::Sessions(p)) = &mut self.popup {
                    p.selected = p.selected.min(self.sessions.len().saturating_sub(1));
                }
                Vec::new()
            }
            Action::Opened(session) => {
                self.view = View::Chat;
                self.open(*session)
            }
            Action::ToggleView => {
                self.view = match self.view {
                    View::Chat => View::Train,
                    View::Train => View::Chat,
                };
                self.on_train(TrainAction::Show(self.train.pane))
            }
            Action::Train(a) => self.on_train(a),
            Action::Notice(text) => {
                self.notice(text);
                Vec::new()
            }
            Action::Send => self.send(),
            Action::Stop => match &self.generating {
                Some(g) => vec![Command::Cancel(g.job)],
                None => {
                    if self.editing.is_some() {
                        self.cancel_edit();
                    } else {
                        self.focus = Focus::Transcript;
                    }
                    Vec::new()
                }
            },
            Action::Quit => {
                self.quit = true;
                let mut out = Vec::new();
                if let Some(g) = &self.generating {
                    out.push(Command::Cancel(g.job));
                }
                out.extend([Command::Save, Command::Quit]);
                out
            }
            Action::FocusInput => {
                self.focus = Focus::Input;
                Vec::new()
            }
            Action::FocusTranscript => {
                self.focus = Focus::Transcript;
                if self.selected.is_none() {
                    self.select_last();
                }
                self.view_follows_cursor = true;
                Vec::new()
            }
            Action::ToggleFocus => {
                let a = match self.focus {
                    Focus::Input => Action::FocusTranscript,
                    Focus::Transcript => Action::FocusInput,
                };
                self.update(a)
            }
            Action::ToggleHelp => {
                self.help_scroll = 0;
                self.popup = match self.popup {
                    Some(Popup::Help) => None,
                    _ => Some(Popup::Help),
                };
                Vec::new()
            }
            Action::ToggleRouting => {
                self.inspector.routing = !self.inspector.routing;
                self.focus_inspected();
                Vec::new()
            }
            Action::ToggleTokens => {
                self.inspector.tokens = !self.inspector.tokens;
                self.focus_inspected();
                Vec::new()
            }
            Action::ToggleSettings => {
                self.popup = match self.popup {
                    Some(Popup::Settings(_)) => None,
                    _ => Some(Popup::Settings(SettingsPanel::default())),
                };
                Vec::new()
            }
            Action::ToggleSessions => match self.popup {
                Some(Popup::Sessions(_)) => {
                    self.popup = None;
                    Vec::new()
                }
                _ => {
                    self.popup = Some(Popup::Sessions(SessionsPanel {
                        selected: 0,
                        rename: None,
                        confirm_delete: false,
                    }));
                    vec![Command::Save, Command::ListSessions]
                }
            },
            Action::ToggleThought => {
                if let Some(n) = self.thought_target() {
                    if !self.expanded.remove(&n) {
                        self.expanded.insert(n);
                    }
                }
                Vec::new()
            }
            Action::Cursor(d) => {
                if let Some((_, m)) = self.inspected() {
                    let last = m.tokens.len().saturating_sub(1);
                    self.cursor = (self.cursor as isize + d).clamp(0, last as isize) as usize;
                    self.cursor_follow = self.cursor == last && self.is_generating_selected();
                    self.view_follows_cursor = true;
                }
                Vec::new()
            }
            Action::CursorStart => {
                self.cursor = 0;
                self.cursor_follow = false;
                self.view_follows_cursor = true;
                Vec::new()
            }
            Action::CursorEnd => {
                if let Some((_, m)) = self.inspected() {
                    self.cursor = m.tokens.len().saturating_sub(1);
                    self.cursor_follow = true;
                    self.view_follows_cursor = true;
                }
                Vec::new()
            }
            Action::SelectMessage(d) => {
                let thread = self.session.conversation.thread();
                if thread.is_empty() {
                    return Vec::new();
                }
                let at = self
                    .selected
                    .and_then(|s| thread.iter().position(|&n| n == s))
                    .unwrap_or(thread.len() - 1) as isize;
                let to = (at + d).clamp(0, thread.len() as isize - 1) as usize;
                self.select(thread[to]);
                Vec::new()
            }
            Action::Scroll(d) => {
                self.scroll = (self.scroll as isize + d).max(0) as usize;
                self.view_follows_cursor = false;
                Vec::new()
            }
            Action::Regenerate => self.regenerate(self.selected),
            Action::RegenerateLast => {
                let last = self.session.conversation.thread().last().copied();
                self.regenerate(last)
            }
            Action::Edit => self.edit(),
            Action::Sibling(d) => {
                if let Some(n) = self.selected {
                    let to = self.session.conversation.switch_sibling(n, d);
                    if to != n {
                        self.select(to);
                        self.unsaved = true;
                    }
                }
                Vec::new()
            }
            Action::KeepThinking => self.keep_thinking(),
            Action::Layer(d) => {
                let n = self.model_info().moe_layers.len();
                if n > 0 {
                    self.inspector.layer =
                        (self.inspector.layer as isize + d).clamp(0, n as isize - 1) as usize;
                }
                Vec::new()
            }
            Action::ToggleExpertColour => {
                self.inspector.colour = !self.inspector.colour;
                if self.inspector.colour && self.model_info().moe_layers.is_empty() {
                    self.notice("this model has no routed experts to colour by");
                    self.inspector.colour = false;
                }
                Vec::new()
            }
            Action::CycleRoutingView => {
                self.inspector.view = match self.inspector.view {
                    RoutingView::Token => RoutingView::Load,
                    RoutingView::Load => RoutingView::Token,
                };
                self.inspector.routing = true;
                Vec::new()
            }
            Action::Copy => {
                let Some(n) = self.selected else {
                    return Vec::new();
                };
                let m = self.message(n);
                let text = m.answer_text(self.model_info());
                self.notice(format!(
                    "copied {} characters (OSC 52)",
                    text.chars().count()
                ));
                vec![Command::Copy(text)]
            }
            Action::Export => vec![Command::Save, Command::Export],
            Action::OpenSession(path) => {
                self.popup = None;
                vec![Command::Save, Command::OpenSession(path)]
            }
            Action::RenameSession(path, name) => {
                if self.is_current(&path) {
                    self.session.name = name;
                    self.unsaved = true;
                    vec![Command::Save, Command::ListSessions]
                } else {
                    vec![Command::RenameSession { path, name }, Command::ListSessions]
                }
            }
            Action::DeleteSession(path) => {
                if self.is_current(&path) {
                    self.notice("this is the open session: start a new one (n) before deleting it");
                    Vec::new()
                } else {
                    vec![Command::DeleteSession(path), Command::ListSessions]
                }
            }
            Action::NewSession => {
                let mut out = Vec::new();
                if let Some(g) = &self.generating {
                    out.push(Command::Cancel(g.job));
                }
                out.push(Command::Save);
                let mut s = Session::new(crate::session::now_secs());
                if s.id == self.session.id {
                    s.id.push_str("-2");
                }
                s.model = self.model.clone();
                self.reset_to(s);
                self.session.settings = self.default_settings();
                out
            }
        }
    }

    fn is_current(&self, path: &std::path::Path) -> bool {
        path.file_stem().is_some_and(|s| *s == *self.session.id)
    }

    fn is_generating_selected(&self) -> bool {
        self.generating
            .as_ref()
            .is_some_and(|g| Some(g.node) == self.selected)
    }

    /// Opening an inspector from the input box selects the newest reply.
    fn focus_inspected(&mut self) {
        if self.inspected().is_none() {
            if let Some(&n) = self
                .session
                .conversation
                .thread()
                .iter()
                .rev()
                .find(|&&n| self.message(n).role == Role::Assistant)
            {
                self.select(n);
            }
        }
    }

    fn select(&mut self, node: usize) {
        self.selected = Some(node);
        let len = self.message(node).tokens.len();
        let generating = self.generating.as_ref().is_some_and(|g| g.node == node);
        // A finished reply opens at its first token; a streaming one follows the newest.
        self.cursor = if generating { len.saturating_sub(1) } else { 0 };
        self.cursor_follow = generating;
        self.view_follows_cursor = true;
    }

    /// The message whose thought `t` folds: the selected reply, or the newest one.
    fn thought_target(&self) -> Option<usize> {
        if let Some((n, _)) = self.inspected() {
            return Some(n);
        }
        self.session
            .conversation
            .thread()
            .iter()
            .rev()
            .copied()
            .find(|&n| self.message(n).role == Role::Assistant)
    }

    fn reset_to(&mut self, session: Session) {
        self.session = session;
        self.generating = None;
        self.editing = None;
        self.expanded.clear();
        self.scroll = 0;
        self.popup = None;
        self.select_last();
        self.unsaved = false;
    }

    fn open(&mut self, session: Session) -> Vec<Command> {
        let mut out = Vec::new();
        if let Some(g) = &self.generating {
            out.push(Command::Cancel(g.job));
        }
        if let (Some(loaded), Some(rec)) = (&self.model, &session.model) {
            if loaded.checkpoint_hash != rec.checkpoint_hash {
                self.notice(format!(
                    "recorded with {}; new replies come from {}",
                    rec.id, loaded.id
                ));
            }
        }
        let title = session.title();
        self.reset_to(session);
        if self.notice.is_none() {
            self.notice(format!("opened “{title}”"));
        }
        out
    }

    fn can_generate(&mut self) -> bool {
        match &self.engine {
            EngineState::Ready => true,
            EngineState::Loading(m) => {
                let m = m.clone();
                self.notice(format!("the model is still loading ({m})"));
                false
            }
            EngineState::Failed(e) => {
                let e = e.clone();
                self.notice(format!("no model: {e}"));
                false
            }
            EngineState::Absent => {
                self.notice("no model loaded: start with --model DIR to continue this session");
                false
            }
        }
    }

    fn send(&mut self) -> Vec<Command> {
        if self.input.is_empty() || !self.can_generate() {
            return Vec::new();
        }
        let mut out = self.cancel_running();
        let text = self.input.take().trim_end().to_string();
        let parent = match self.editing.take() {
            // An edit becomes a sibling of the message it edits: the old branch stays.
            Some(edited) => {
                let p = self.session.conversation.nodes[edited].parent.unwrap_or(0);
                self.input.set(&std::mem::take(&mut self.draft));
                p
            }
            None => self
                .session
                .conversation
                .thread()
                .last()
                .copied()
                .unwrap_or(0),
        };
        let user = self
            .session
            .conversation
            .push(parent, Message::new(Role::User, text));
        out.push(Command::Transcribe(user));
        out.extend(self.start_reply(user, Vec::new(), 0.0));
        out
    }

    /// Cancels the running job (its node is marked cancelled) before starting another.
    fn cancel_running(&mut self) -> Vec<Command> {
        match self.generating.take() {
            Some(g) => {
                let m = &mut self.session.conversation.nodes[g.node].message;
                m.finish = Some(crate::trace::FinishReason::Cancelled);
                vec![Command::Cancel(g.job)]
            }
            None => Vec::new(),
        }
    }

    /// Adds an assistant reply under `user` (continuing `kept` tokens) and asks for it.
    fn start_reply(
        &mut self,
        user: usize,
        kept: Vec<TokenRecord>,
        think_base: f64,
    ) -> Vec<Command> {
        let model = self.model.clone().unwrap_or_default();
        if self.session.model.is_none() {
            self.session.model = Some(model.clone());
        }
        let settings = self.session.settings.clone();
        let messages = self.session.conversation.chat_messages(user, &model);
        let continue_from: Vec<u32> = kept.iter().map(|t| t.id).collect();
        let mut msg = Message::new(Role::Assistant, "");
        msg.settings = Some(settings.clone());
        msg.tokens = kept;
        let node = self.session.conversation.push(user, msg);
        let job = self.next_job;
        self.next_job += 1;
        self.generating = Some(Generating {
            job,
            node,
            started: self.now,
            prompt_done: None,
            think_base,
            reused: 0,
        });
        self.selected = Some(node);
        self.cursor = continue_from.len().saturating_sub(1);
        self.cursor_follow = true;
        self.scroll = 0;
        self.view_follows_cursor = false;
        self.unsaved = true;
        let think_budget = if continue_from.is_empty() {
            settings.think_budget
        } else {
            // Keep thinking: as many more reasoning tokens as the budget allowed the first time.
            Some(settings.think_budget.unwrap_or(continue_from.len()).max(1))
        };
        vec![Command::Generate(GenSpec {
            job,
            messages,
            max_new_tokens: settings
                .max_tokens
                .saturating_sub(continue_from.len())
                .max(1),
            continue_from,
            sampling: settings.sampling.clone(),
            think_budget,
            top_logprobs: settings.top_logprobs,
        })]
    }

    fn regenerate(&mut self, node: Option<usize>) -> Vec<Command> {
        let Some(node) = node else {
            return Vec::new();
        };
        let user = match self.message(node).role {
            Role::Assistant => self.session.conversation.nodes[node].parent.unwrap_or(0),
            Role::User => node,
            Role::Root => return Vec::new(),
        };
        if !self.can_generate() {
            return Vec::new();
        }
        let mut out = self.cancel_running();
        out.extend(self.start_reply(user, Vec::new(), 0.0));
        out
    }

    fn edit(&mut self) -> Vec<Command> {
        let Some(node) = self.selected else {
            return Vec::new();
        };
        // On a reply, edit the question it answers.
        let node = match self.message(node).role {
            Role::Assistant => self.session.conversation.nodes[node].parent.unwrap_or(0),
            _ => node,
        };
        if self.message(node).role != Role::User {
            return Vec::new();
        }
        let text = self.message(node).content.clone();
        if self.editing.is_none() {
            self.draft = self.input.text.clone();
        }
        self.editing = Some(node);
        self.input.set(&text);
        self.focus = Focus::Input;
        self.notice("editing: Enter sends it as a new branch, Esc cancels");
        Vec::new()
    }

    fn cancel_edit(&mut self) {
        if self.editing.take().is_some() {
            self.input.set(&std::mem::take(&mut self.draft));
        }
    }

    fn keep_thinking(&mut self) -> Vec<Command> {
        let Some((node, m)) = self.inspected() else {
            self.notice("select a reply whose thought the budget closed");
            return Vec::new();
        };
        let Some(cut) = m.thought_cut() else {
            self.notice("this reply's thought was not cut by the budget");
            return Vec::new();
        };
        if !self.model_info().capabilities.think_budget {
            self.notice("this server cannot continue a thought (it needs the reply's token ids)");
            return Vec::new();
        }
        let kept = m.tokens[..cut].to_vec();
        let base = m.think_secs.unwrap_or(0.0);
        if self.is_generating_selected() || !self.can_generate() {
            return Vec::new();
        }
        let user = self.session.conversation.nodes[node].parent.unwrap_or(0);
        let mut out = self.cancel_running();
        out.extend(self.start_reply(user, kept, base));
        out
    }

    fn on_engine(&mut self, ev: EngineEvent) -> Vec<Command> {
        // The chat engine also scores rollouts opened from the Train tab when it holds the
        // policy's weights.
        if self.is_score_event(&ev) {
            return self.on_score_event(ev);
        }
        match ev {
            EngineEvent::Ready(info) => {
                let info = *info;
                let fresh = self.session.conversation.thread().is_empty();
                self.model = Some(info.clone());
                self.engine = EngineState::Ready;
                if fresh {
                    self.session.model = Some(info);
                    self.session.settings = self.default_settings();
                }
                Vec::new()
            }
            EngineEvent::Info(info) => {
                // What the backend gives changed (a server refused log-probabilities): the
                // interface offers what is there now, and the session records it.
                let info = *info;
                if self
                    .session
                    .model
                    .as_ref()
                    .is_none_or(|m| m.remote == info.remote)
                {
                    self.session.model = Some(info.clone());
                    self.unsaved = true;
                }
                self.model = Some(info);
                Vec::new()
            }
            EngineEvent::Note { text } => {
                self.notice(text);
                Vec::new()
            }
            EngineEvent::Revised {
                job,
                prompt,
                tokens,
            } => {
                let Some(g) = self.generating.as_ref().filter(|g| g.job == job) else {
                    return Vec::new();
                };
                let m = &mut self.session.conversation.nodes[g.node].message;
                if let Some(p) = prompt {
                    m.prompt = p;
                }
                // Tokens already shown keep their place; the backend's view of them wins.
                let kept = m.tokens.len().saturating_sub(tokens.len());
                m.tokens.truncate(kept);
                m.tokens.extend(tokens);
                Vec::new()
            }
            EngineEvent::LoadFailed(e) => {
                self.notice(format!("the model failed to load: {e}"));
                self.engine = EngineState::Failed(e);
                Vec::new()
            }
            EngineEvent::Prompt {
                job,
                tokens,
                reused,
            } => {
                let Some(g) = self.generating.as_mut().filter(|g| g.job == job) else {
                    return Vec::new();
                };
                g.prompt_done = Some(self.now);
                g.reused = reused;
                let node = g.node;
                let m = &mut self.session.conversation.nodes[node].message;
                // The prompt of a continued thought ends with the kept reply tokens.
                let own = tokens.len().saturating_sub(m.tokens.len());
                m.prompt = tokens;
                m.prompt.truncate(own);
                Vec::new()
            }
            EngineEvent::Trimmed {
                job,
                dropped_turns,
                prompt_tokens,
            } => {
                let Some(g) = self.generating.as_ref().filter(|g| g.job == job) else {
                    return Vec::new();
                };
                self.session.conversation.nodes[g.node]
                    .message
                    .dropped_turns = dropped_turns;
                let context = self.model_info().context;
                self.notice(format!(
                    "context full ({context} tokens): left out the {} so the reply has room ({prompt_tokens} prompt tokens now)",
                    turns(dropped_turns, "oldest")
                ));
                Vec::new()
            }
            EngineEvent::Token {
                job,
                token,
                top_text,
            } => {
                let Some(g) = self.generating.as_ref().filter(|g| g.job == job) else {
                    return Vec::new();
                };
                let (node, since, base) =
                    (g.node, g.prompt_done.unwrap_or(g.started), g.think_base);
                let texts = &mut self.session.token_texts;
                // The tokenizer's text of each alternative on its own; a chosen token's streamed
                // text only where nothing better is known (it is empty for a partial character).
                for (&(id, _), t) in token.top.iter().zip(top_text) {
                    texts.insert(id, t);
                }
                texts.entry(token.id).or_insert_with(|| token.text.clone());
                let m = &mut self.session.conversation.nodes[node].message;
                if token.phase == Phase::Answer && m.think_secs.is_none() && m.thought_tokens() > 0
                {
                    m.think_secs = Some(base + self.now - since);
                }
                m.tokens.push(token);
                let len = m.tokens.len();
                if self.selected == Some(node) && self.cursor_follow {
                    self.cursor = len - 1;
                }
                Vec::new()
            }
            EngineEvent::Finished { job, reason, stats } => {
                let Some(g) = self.generating.take_if(|g| g.job == job) else {
                    return Vec::new();
                };
                let m = &mut self.session.conversation.nodes[g.node].message;
                m.finish = Some(reason);
                m.stats = Some(stats);
                m.gen_secs = Some(self.now - g.started);
                if m.think_secs.is_none() && m.thought_tokens() > 0 {
                    m.think_secs =
                        Some(g.think_base + self.now - g.prompt_done.unwrap_or(g.started));
                }
                if self.selected == Some(g.node) {
                    self.cursor_follow = false;
                }
                self.unsaved = true;
                vec![Command::Save, Command::Transcribe(g.node)]
            }
            EngineEvent::Scored { .. } => Vec::new(),
            EngineEvent::Failed { job, error } => {
                let Some(g) = self.generating.take_if(|g| g.job == job) else {
                    return Vec::new();
                };
                let m = &mut self.session.conversation.nodes[g.node].message;
                m.error = Some(error.clone());
                self.notice(error);
                self.unsaved = true;
                vec![Command::Save]
            }
        }
    }
}

/// "the oldest turn", "the 3 oldest turns".
pub fn turns(n: usize, which: &str) -> String {
    if n == 1 {
        format!("{which} turn")
    } else {
        format!("{n} {which} turns")
    }
}

#[cfg(test)]
mod tests;
