//! Styles. Only the 16 ANSI colours are used, so the workbench reads the same on any terminal and
//! over any SSH session; emphasis comes from bold, dim, italic and reverse.

use ratatui::style::{Color, Modifier, Style};

pub fn title() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan)
}
pub fn user_label() -> Style {
    Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
}
pub fn assistant_label() -> Style {
    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
}
pub fn gutter_user() -> Style {
    Style::new().fg(Color::Green)
}
pub fn gutter_assistant() -> Style {
    Style::new().fg(Color::Cyan)
}
pub fn selected_gutter() -> Style {
    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
}
pub fn thought() -> Style {
    Style::new()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC)
}
pub fn thought_header() -> Style {
    Style::new().fg(Color::Magenta)
}
pub fn dim() -> Style {
    Style::new().fg(Color::DarkGray)
}
pub fn heading() -> Style {
    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
}
pub fn code() -> Style {
    Style::new().fg(Color::LightYellow)
}
pub fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}
pub fn emphasis() -> Style {
    Style::new().add_modifier(Modifier::ITALIC)
}
/// A self-check line in a thought (the rollout viewer marks them).
pub fn check_mark() -> Style {
    Style::new().fg(Color::Cyan)
}
/// A "wait" in a thought: where the model hesitated.
pub fn wait_mark() -> Style {
    Style::new()
        .fg(Color::LightRed)
        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
}
pub fn error() -> Style {
    Style::new().fg(Color::Red)
}
pub fn cursor() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}
pub fn forced() -> Style {
    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
}
pub fn status() -> Style {
    Style::new().fg(Color::White).bg(Color::Blue)
}
pub fn status_busy() -> Style {
    Style::new()
        .fg(Color::Black)
        .bg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}
pub fn hints() -> Style {
    Style::new().fg(Color::DarkGray)
}
pub fn hint_key() -> Style {
    Style::new().fg(Color::Cyan)
}
pub fn border() -> Style {
    Style::new().fg(Color::DarkGray)
}
pub fn border_focus() -> Style {
    Style::new().fg(Color::Cyan)
}
pub fn highlight() -> Style {
    Style::new().fg(Color::Black).bg(Color::Cyan)
}

/// Distinct foreground colours for experts (expert id modulo the palette).
pub const EXPERT_PALETTE: [Color; 12] = [
    Color::Red,
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Magenta,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightMagenta,
    Color::LightCyan,
];

pub fn expert(e: u32) -> Style {
    Style::new().fg(EXPERT_PALETTE[e as usize % EXPERT_PALETTE.len()])
}

/// Heat from 0 (cold) to 1 (hot) as a cell: a shade character and a colour.
pub fn heat(v: f32) -> (&'static str, Style) {
    if v <= 0.0 {
        return ("·", dim());
    }
    let (ch, color) = match v {
        v if v < 0.25 => ("░", Color::Blue),
        v if v < 0.5 => ("▒", Color::Cyan),
        v if v < 0.75 => ("▓", Color::Yellow),
        _ => ("█", Color::Red),
    };
    (ch, Style::new().fg(color))
}

/// Eight-level bar characters, for sparklines and strips.
pub const BARS: [&str; 8] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
