//! The terminal: raw mode, the alternate screen (or an inline viewport that keeps the shell's
//! scrollback), bracketed paste, and the guarantee that the terminal is given back as it was,
//! on a normal exit, on a panic and on a signal.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::{Terminal, TerminalOptions, Viewport};

pub type Term = Terminal<CrosstermBackend<Stdout>>;

/// Whether the terminal is in our hands (raw mode on), and whether we switched screens.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static ALTERNATE: AtomicBool = AtomicBool::new(false);

/// Takes the terminal: raw mode, bracketed paste, and the alternate screen unless `inline`
/// (then a viewport of `inline_height` rows under the cursor).
pub fn init(inline: bool) -> io::Result<Term> {
    install_panic_hook();
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    let mut out = io::stdout();
    if inline {
        execute!(out, EnableBracketedPaste)?;
    } else {
        execute!(out, EnterAlternateScreen, EnableBracketedPaste)?;
        ALTERNATE.store(true, Ordering::SeqCst);
    }
    let viewport = if inline {
        let rows = crossterm::terminal::size().map_or(24, |(_, h)| h);
        Viewport::Inline((rows * 2 / 3).clamp(12.min(rows), 30))
    } else {
        Viewport::Fullscreen
    };
    Terminal::with_options(CrosstermBackend::new(out), TerminalOptions { viewport })
}

/// Gives the terminal back. Safe to call more than once and from a panic hook.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = io::stdout();
    let _ = execute!(out, DisableBracketedPaste);
    if ALTERNATE.swap(false, Ordering::SeqCst) {
        let _ = execute!(out, LeaveAlternateScreen);
    }
    let _ = execute!(out, cursor::Show);
    let _ = disable_raw_mode();
    let _ = out.flush();
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Only the UI thread's panics end the program; the engine thread turns its own into
            // a failed job. Restore first so the message is readable.
            if std::thread::current().name() != Some("thinkbench-engine") {
                restore();
            }
            previous(info);
        }));
    });
}

/// Puts `text` on the clipboard of the terminal the user sits at, also over SSH (OSC 52).
pub fn copy_to_clipboard(text: &str) -> io::Result<()> {
    let seq = osc52(text);
    let mut out = io::stdout();
    out.write_all(seq.as_bytes())?;
    out.flush()
}

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", base64(text.as_bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(osc52("hi"), "\x1b]52;c;aGk=\x07");
    }
}
