//! Snapshots of every view at 80×24 and 160×48, drawn from scripted app states (no model).
//! Review a changed snapshot by reading it: `cargo insta review`, or the `.snap.new` file.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::app::{sample, Action, App, RoutingView};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| super::draw(f, app)).unwrap();
    t
}

fn snap(name: &str, app: &App) {
    for (w, h) in SIZES {
        let t = render(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), t.backend());
    }
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let t = render(app, w, h);
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn welcome() {
    let mut app = sample::chat();
    app.session = crate::session::Session::new(1_796_000_000);
    app.selected = None;
    snap("welcome", &app);
}

#[test]
fn chat_with_folded_thoughts() {
    let app = sample::chat();
    snap("chat", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("▸ thought for"), "{s}");
    assert!(s.contains("In Python"), "markdown heading without its #");
    assert!(!s.contains("## In Python"));
}

#[test]
fn thought_streams_in_its_pane() {
    let app = sample::streaming();
    snap("streaming", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("◆ thinking… 30 tokens · 1.8 s"), "{s}");
    assert!(s.contains("● thinking 30 tok · 160 cached"), "{s}");
}

#[test]
fn unfolded_thought() {
    let mut app = sample::chat();
    let last = app.selected.unwrap();
    app.expanded.insert(last);
    snap("unfolded", &app);
    assert!(screen(&app, 160, 48).contains("┊ A one-line function is enough."));
}

fn inspecting(routing: bool, tokens: bool) -> App {
    let mut app = sample::chat();
    app.update(Action::FocusTranscript);
    app.update(Action::CursorStart);
    app.update(Action::Cursor(4));
    app.inspector.routing = routing;
    app.inspector.tokens = tokens;
    app
}

#[test]
fn routing_of_the_selected_token() {
    let app = inspecting(true, false);
    snap("routing_token", &app);
    let s = screen(&app, 80, 24);
    // The cursor's token is " enough." (the 5th of the thought); its layer-1 experts are listed.
    assert!(s.contains("‘ enough.’  #5/47 · think"), "{s}");
    let t = app.cursor_token().unwrap();
    let r = &t.routing[0];
    assert!(
        s.contains(&format!("e{} {:.2}", r.experts[0], r.weights[0]))
            || s.contains(&format!("e{} {:.2}", r.experts[1], r.weights[1])),
        "{s}"
    );
}

#[test]
fn routing_load_by_phase() {
    let mut app = inspecting(true, false);
    app.inspector.view = RoutingView::Load;
    snap("routing_load", &app);
    assert!(screen(&app, 80, 24).contains("think · "));
}

#[test]
fn token_inspector() {
    let app = inspecting(false, true);
    snap("tokens", &app);
    let s = screen(&app, 80, 24);
    let t = app.cursor_token().unwrap();
    assert!(
        s.contains(&format!("{:.1}%", t.logprob.exp() * 100.0)),
        "{s}"
    );
    assert!(s.contains("▲ 5/"), "entropy strip marker: {s}");
}

#[test]
fn both_inspectors() {
    snap("both_inspectors", &inspecting(true, true));
}

#[test]
fn many_experts_are_grouped() {
    let mut app = sample::long(400, 6, 256, 8);
    app.update(Action::FocusTranscript);
    app.update(Action::ToggleRouting);
    snap("routing_256_experts", &app);
    let s = screen(&app, 80, 24);
    assert!(s.contains("experts per cell"), "{s}");
}

#[test]
fn help_popup() {
    let mut app = sample::chat();
    app.update(Action::ToggleHelp);
    snap("help", &app);
}

#[test]
fn settings_popup() {
    let mut app = sample::chat();
    app.session.settings.think_budget = Some(256);
    app.update(Action::ToggleSettings);
    snap("settings", &app);
    assert!(screen(&app, 80, 24).contains("thinking budget     256"));
}

#[test]
fn sessions_popup() {
    let mut app = sample::chat();
    app.update(Action::ToggleSessions);
    let here = crate::session::SessionSummary {
        path: format!("/s/{}.json", app.session.id).into(),
        id: app.session.id.clone(),
        title: app.session.title(),
        updated: "2026-11-28T13:18:00Z".into(),
        messages: 4,
        model: "sample-moe".into(),
    };
    let other = crate::session::SessionSummary {
        path: "/s/x.json".into(),
        id: "x".into(),
        title: "Why is the sky blue?".into(),
        updated: "2026-11-27T09:00:00Z".into(),
        messages: 2,
        model: "sample-moe".into(),
    };
    app.update(Action::Sessions(vec![here, other]));
    snap("sessions", &app);
}

#[test]
fn colour_by_expert_keeps_the_text() {
    let mut app = sample::chat();
    app.update(Action::ToggleExpertColour);
    assert!(app.inspector.colour);
    let t = render(&app, 80, 24);
    let buf = t.backend().buffer();
    // Some answer cell carries an expert colour from the palette.
    let coloured = buf
        .content()
        .iter()
        .filter(|c| super::theme::EXPERT_PALETTE.contains(&c.fg) && c.symbol() != " ")
        .count();
    assert!(coloured > 20, "{coloured}");
}

#[test]
fn read_only_session_says_so() {
    let mut app = sample::chat();
    app.model = None;
    app.engine = crate::app::EngineState::Absent;
    let s = screen(&app, 80, 24);
    assert!(s.contains("sample-moe (read-only)"), "{s}");
}
