//! An incremental parser of server-sent events (the WHATWG "event stream" format), fed one
//! line at a time by the HTTP client.
//!
//! Per the spec: `data:` takes the rest of the line less one leading space, several `data`
//! lines join with '\n', a blank line dispatches, lines starting with ':' are comments
//! (keep-alives from SGLang and llama.cpp), `event:` names the next event, `id:` and `retry:`
//! are ignored, a line with no colon is a field with an empty value, and a UTF-8 byte-order
//! mark at the very start of the stream is dropped. OpenAI's end marker `data: [DONE]`
//! dispatches as [`SseEvent::Done`].
//!
//! One leniency beyond the spec: a `data:` line that arrives while data is pending, when the
//! pending data is already a complete JSON value (or `[DONE]`), first dispatches the pending
//! data, as if the blank line had been there. Servers that omit blank lines between chunks
//! then still yield one event per chunk, where the spec would join two JSON objects with '\n'
//! into one payload that parses as neither. A JSON value split over several `data:` lines is
//! unaffected: its first lines are not complete JSON on their own.

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    /// `event` is the `event:` field's value when one was given (None for the default
    /// "message" type); `data` the joined data lines.
    Data { event: Option<String>, data: String },
    /// `data: [DONE]`: the stream's end.
    Done,
}

/// The parser's state between lines.
#[derive(Debug, Clone, Default)]
pub struct SseParser {
    data: String,
    /// Whether any `data` line arrived since the last dispatch (the data may still be empty).
    has_data: bool,
    event: Option<String>,
    /// Whether a line was seen (for the byte-order mark).
    started: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds one line WITHOUT its line terminator (a trailing '\r' is stripped here). Returns
    /// an event when a blank line dispatches one, or when a `data:` line follows complete
    /// pending JSON (see the module docs).
    pub fn feed_line(&mut self, line: &str) -> Option<SseEvent> {
        let mut line = line.strip_suffix('\r').unwrap_or(line);
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let early = if self.has_data && pending_is_complete(&self.data) {
                    self.dispatch()
                } else {
                    None
                };
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                early
            }
            "event" => {
                self.event = Some(value.to_owned());
                None
            }
            // `id`, `retry` and unknown fields.
            _ => None,
        }
    }

    /// End of stream: dispatches whatever data is pending (for servers that end without a
    /// final blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        self.dispatch()
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take().filter(|e| !e.is_empty());
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        let data = std::mem::take(&mut self.data);
        if data.trim() == "[DONE]" {
            return Some(SseEvent::Done);
        }
        Some(SseEvent::Data { event, data })
    }
}

/// Whether pending data is a whole payload already: a complete JSON value, or `[DONE]`.
fn pending_is_complete(data: &str) -> bool {
    data.trim() == "[DONE]" || serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &str) -> SseEvent {
        SseEvent::Data {
            event: None,
            data: s.into(),
        }
    }

    /// Feeds every line, then finishes; all events in order.
    fn events(lines: &[&str]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out: Vec<SseEvent> = lines.iter().filter_map(|l| p.feed_line(l)).collect();
        out.extend(p.finish());
        out
    }

    #[test]
    fn openai_style_stream() {
        let mut p = SseParser::default();
        assert_eq!(p.feed_line(r#"data: {"a":1}"#), None);
        assert_eq!(p.feed_line(""), Some(data(r#"{"a":1}"#)));
        assert_eq!(p.feed_line("data: [DONE]"), None);
        assert_eq!(p.feed_line(""), Some(SseEvent::Done));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn comments_and_keep_alives_are_ignored() {
        assert_eq!(
            events(&[": ping", "data: {\"x\":2}", ":", "", ": keep-alive", ""]),
            vec![data("{\"x\":2}")]
        );
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        assert_eq!(
            events(&["data: {\"a\":", "data:  1}", ""]),
            // Only one leading space is stripped.
            vec![data("{\"a\":\n 1}")]
        );
        assert_eq!(
            events(&["data:x", "data:", "data: y", ""]),
            vec![data("x\n\ny")]
        );
    }

    #[test]
    fn crlf_lines() {
        assert_eq!(
            events(&["data: {\"a\":1}\r", "\r", "data: [DONE]\r", "\r"]),
            vec![data("{\"a\":1}"), SseEvent::Done]
        );
    }

    #[test]
    fn missing_blank_lines_split_on_complete_json() {
        assert_eq!(
            events(&["data: {\"a\":1}", "data: {\"b\":2}", "data: [DONE]"]),
            vec![data("{\"a\":1}"), data("{\"b\":2}"), SseEvent::Done]
        );
    }

    #[test]
    fn done_then_more_data_without_blank_line_and_done_with_spaces() {
        assert_eq!(
            events(&["data:  [DONE] ", "data: {}"]),
            vec![SseEvent::Done, data("{}")]
        );
    }

    #[test]
    fn event_names_and_ignored_fields() {
        assert_eq!(
            events(&[
                "event: error",
                "id: 7",
                "retry: 1000",
                "data: {\"error\":\"boom\"}",
                "",
                "data: {}",
                "",
            ]),
            vec![
                SseEvent::Data {
                    event: Some("error".into()),
                    data: "{\"error\":\"boom\"}".into()
                },
                data("{}"),
            ]
        );
        // An event name with no data dispatches nothing, and does not leak into the next one.
        assert_eq!(events(&["event: ping", "", "data: 1", ""]), vec![data("1")]);
    }

    #[test]
    fn field_without_colon_is_an_empty_value() {
        // "data" alone is a data line with an empty value: it dispatches an empty payload.
        assert_eq!(events(&["data", ""]), vec![data("")]);
        assert_eq!(events(&["garbage", ""]), vec![]);
    }

    #[test]
    fn blank_lines_alone_dispatch_nothing_and_bom_is_dropped() {
        assert_eq!(events(&["", "", ""]), vec![]);
        assert_eq!(events(&["\u{feff}data: 5", ""]), vec![data("5")]);
    }

    #[test]
    fn finish_dispatches_pending_data() {
        let mut p = SseParser::new();
        assert_eq!(p.feed_line("data: {\"last\":true}"), None);
        assert_eq!(p.finish(), Some(data("{\"last\":true}")));
        assert_eq!(p.finish(), None);
    }
}
