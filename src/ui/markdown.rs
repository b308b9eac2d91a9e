//! Light Markdown for replies: headings, bullet and numbered lists, block quotes, fenced code
//! blocks, rules, and inline `code`, **bold** and *emphasis*. Anything else is shown as written.

use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::theme;
use super::wrap::Wrapper;

/// Renders `text` wrapped to `width`, each line starting with `gutter`.
pub fn render(text: &str, width: usize, gutter: &Span<'static>, base: Style) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let mut in_code = false;
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        if trimmed.starts_with("```") {
            in_code = !in_code;
            let lang = trimmed.trim_start_matches('`').trim();
            let label = if in_code && !lang.is_empty() {
                format!("┌ {lang}")
            } else if in_code {
                "┌".to_string()
            } else {
                "└".to_string()
            };
            out.push(Line::from(vec![
                gutter.clone(),
                Span::styled(label, theme::dim()),
            ]));
            continue;
        }
        if in_code {
            // Code keeps its spacing; long lines break hard.
            let prefix = vec![gutter.clone(), Span::styled("│ ", theme::dim())];
            let mut w = Wrapper::new(width, prefix);
            w.push(&raw.replace(' ', "\u{a0}"), theme::code());
            let lines = w.finish();
            if lines.is_empty() {
                out.push(Line::from(vec![
                    gutter.clone(),
                    Span::styled("│", theme::dim()),
                ]));
            }
            out.extend(lines);
            continue;
        }
        if trimmed.is_empty() {
            out.push(Line::from(vec![gutter.clone()]));
            continue;
        }
        if let Some(h) = heading(trimmed) {
            let mut w = Wrapper::new(width, vec![gutter.clone()]);
            w.push(h, theme::heading());
            out.extend(w.finish());
            continue;
        }
        if trimmed.chars().all(|c| c == '-' || c == '*' || c == '_') && trimmed.len() >= 3 {
            let n = width.saturating_sub(gutter.width()).min(40);
            out.push(Line::from(vec![
                gutter.clone(),
                Span::styled("─".repeat(n), theme::dim()),
            ]));
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let (marker, rest, quote) = if let Some(r) = bullet(trimmed) {
            ("• ".to_string(), r, false)
        } else if let Some((n, r)) = numbered(trimmed) {
            (format!("{n}. "), r, false)
        } else if let Some(r) = trimmed
            .strip_prefix("> ")
            .or(trimmed.strip_prefix('>').filter(|_| trimmed == ">"))
        {
            ("▎ ".to_string(), r, true)
        } else {
            (String::new(), trimmed, false)
        };
        let pad = " ".repeat(indent.min(8));
        let mut w = Wrapper::new(
            width,
            vec![
                gutter.clone(),
                Span::raw(pad.clone() + &" ".repeat(marker.chars().count())),
            ],
        );
        let style = if quote {
            base.patch(theme::emphasis())
        } else {
            base
        };
        inline(&mut w, rest, style);
        let mut lines = w.finish();
        if let Some(first) = lines.first_mut() {
            // The first line carries the marker where the hanging indent is.
            first.spans[1] = Span::styled(
                pad + &marker,
                if quote {
                    theme::dim()
                } else {
                    theme::hint_key()
                },
            );
        }
        out.extend(lines);
    }
    out
}

fn heading(line: &str) -> Option<&str> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    (1..=6)
        .contains(&hashes)
        .then(|| line[hashes..].strip_prefix(' '))
        .flatten()
}

fn bullet(line: &str) -> Option<&str> {
    ["- ", "* ", "+ "].iter().find_map(|p| line.strip_prefix(p))
}

fn numbered(line: &str) -> Option<(&str, &str)> {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = line[digits..]
        .strip_prefix(". ")
        .or(line[digits..].strip_prefix(") "))?;
    Some((&line[..digits], rest))
}

/// Inline markup: `code`, **bold**, *emphasis* / _emphasis_.
fn inline(w: &mut Wrapper, text: &str, base: Style) {
    let mut rest = text;
    let mut plain = String::new();
    while !rest.is_empty() {
        let found = [
            ("`", "`", theme::code()),
            ("**", "**", theme::bold()),
            ("*", "*", theme::emphasis()),
            ("_", "_", theme::emphasis()),
        ]
        .into_iter()
        .find_map(|(open, close, style)| {
            let inner = rest.strip_prefix(open)?;
            // Emphasis needs a non-space right after the opener (so "2 * 3" stays text).
            if inner.starts_with(' ') || inner.is_empty() {
                return None;
            }
            let end = inner.find(close)?;
            (end > 0).then(|| (&inner[..end], &inner[end + close.len()..], style))
        });
        match found {
            Some((inner, after, style)) => {
                w.push(&plain, base);
                plain.clear();
                w.push(inner, base.patch(style));
                rest = after;
            }
            None => {
                let c = rest.chars().next().expect("non-empty");
                plain.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    w.push(&plain, base);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    #[test]
    fn blocks_and_inline() {
        let md = "# Title\n\n- one **two**\n2. three\n> quoted\n```rust\nlet x  = 1;\n```\n2 * 3 = *six*";
        let lines = render(md, 30, &Span::raw("| "), Style::new());
        assert_eq!(
            text(&lines),
            [
                "| Title",
                "| ",
                "| • one two",
                "| 2. three",
                "| ▎ quoted",
                "| ┌ rust",
                "| │ let\u{a0}x\u{a0}\u{a0}=\u{a0}1;",
                "| └",
                "| 2 * 3 = six",
            ]
        );
        // "two" is bold, "six" italic.
        let bold = lines[2].spans.iter().find(|s| s.content == "two").unwrap();
        assert!(bold
            .style
            .add_modifier
            .contains(ratatui::style::Modifier::BOLD));
        let six = lines[8].spans.iter().find(|s| s.content == "six").unwrap();
        assert!(six
            .style
            .add_modifier
            .contains(ratatui::style::Modifier::ITALIC));
    }
}
