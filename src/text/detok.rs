//! Streaming detokenization: ids in one at a time, complete text out.
//!
//! Byte-level BPE vocabularies split a multi-byte character across tokens (an emoji is often
//! four byte tokens), and sentencepiece decoders treat the first token of a text differently.
//! [`StreamDecoder`] therefore decodes a short window of recent ids with the tokenizer's own
//! decoder and hands out only the text that is final: the difference between the window's
//! decoding and that of its already-emitted prefix, held back while it ends in an incomplete
//! character (U+FFFD). The pieces concatenate to what decoding all ids at once gives.

use super::TextCodec;

/// See the module docs. It holds no tokenizer: pass the same [`TextCodec`] to every call.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    /// The window: ids already emitted (context, the first `prefix_len`) then pending ids.
    ids: Vec<u32>,
    /// The decoding of `ids[..prefix_len]`.
    prefix: String,
    prefix_len: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the text that became final (empty while a character is incomplete,
    /// sometimes several characters at once).
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> String {
        self.ids.push(id);
        let text = codec.decode(&self.ids);
        if text.len() > self.prefix.len()
            && text.starts_with(self.prefix.as_str())
            && !text.ends_with('\u{FFFD}')
        {
            let new = text[self.prefix.len()..].to_string();
            // Keep the ids just emitted as the context for the next ones.
            self.ids.drain(..self.prefix_len);
            self.prefix_len = self.ids.len();
            self.prefix = codec.decode(&self.ids);
            new
        } else {
            String::new()
        }
    }

    /// Whether ids are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        self.ids.len() > self.prefix_len
    }

    /// Flushes whatever is held back (an incomplete character comes out as U+FFFD) and starts
    /// afresh, as at the beginning of a text.
    pub fn finish(&mut self, codec: &TextCodec) -> String {
        let text = codec.decode(&self.ids);
        let rest = match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.to_string(),
            None => String::new(),
        };
        *self = Self::default();
        rest
    }
}

#[cfg(test)]
mod tests {
    use crate::text::codec::tests::{r1_like_codec, THINK};
    use crate::text::{StreamDecoder, TextCodec};

    fn stream(codec: &TextCodec, ids: &[u32]) -> Vec<String> {
        let mut d = StreamDecoder::new();
        let mut out: Vec<String> = ids.iter().map(|&id| d.push(codec, id)).collect();
        out.push(d.finish(codec));
        out
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let c = r1_like_codec();
        // The test vocabulary has no merges for these, so every UTF-8 byte is its own token.
        let text = "a🙂b 世界 é!";
        let ids = c.encode_raw(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one id per byte");
        let pieces = stream(&c, &ids);
        assert_eq!(pieces.concat(), text);
        assert_eq!(pieces.concat(), c.decode(&ids));
        // The emoji's four byte tokens give nothing, nothing, nothing, then the whole emoji.
        assert_eq!(pieces[..5], ["a", "", "", "", "🙂"]);
        // 世 and 界 are three bytes each.
        assert_eq!(pieces[7..13], ["", "", "世", "", "", "界"]);
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
    }

    #[test]
    fn special_tokens_and_merges_stream_like_a_full_decode() {
        let c = r1_like_codec();
        let ids = c
            .encode_raw("<think>\nhello world 🙂</think>\n\nok<｜end▁of▁sentence｜>")
            .unwrap();
        assert_eq!(ids[0], THINK);
        let pieces = stream(&c, &ids);
        assert_eq!(pieces.concat(), c.decode(&ids));
        assert_eq!(pieces[0], "<think>");
    }

    #[test]
    fn incomplete_tail_is_flushed_lossily() {
        let c = r1_like_codec();
        // The first two bytes of 世 (E4 B8 96), then nothing more.
        let mut d = StreamDecoder::new();
        assert_eq!(d.push(&c, u32::from(b'x')), "x");
        assert_eq!(d.push(&c, 0xE4), "");
        assert_eq!(d.push(&c, 0xB8), "");
        assert!(d.has_pending());
        assert_eq!(d.finish(&c), "\u{FFFD}");
        assert!(!d.has_pending());
        // A broken sequence followed by a complete character comes out as soon as it is final,
        // the same way the full decode renders it.
        let ids = [0xE4, 0xB8, u32::from(b'y'), 0xE4, 0xB8, 0x96];
        let pieces = stream(&c, &ids);
        assert_eq!(pieces, ["", "", "\u{FFFD}y", "", "", "世", ""]);
        assert_eq!(pieces.concat(), c.decode(&ids));
    }
}
