//! Following a JSONL file that another process appends to: each [`LineTail::read`] returns only
//! the lines completed since the last one, so a long run's log is read once, not once per poll.
//!
//! Two things happen to such a file besides growing. Its writer may be caught mid-line: the
//! partial line is left for the next read (unless it is already a whole JSON value, which the last
//! line of a file written by hand without a final newline is). And it may be rewritten: a resumed
//! run rewrites its log without the steps after its checkpoint, so the bytes we already read are
//! no longer there; comparing the end of the last line read with what is now at that place notices
//! this even when the new file has grown past the old length, and the read starts over.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// How much of the last line read is kept to notice a rewrite.
const CHECK_BYTES: usize = 256;
/// At most this much is read per call, so one poll of a huge log never stalls its thread long.
const MAX_READ: u64 = 32 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct TailLine {
    /// 1-based line number in the file.
    pub number: usize,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// Length in bytes, without the newline.
    pub len: u64,
    pub text: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// The file was rewritten or truncated: these lines start again from its beginning.
    pub reset: bool,
    pub lines: Vec<TailLine>,
}

#[derive(Debug)]
pub struct LineTail {
    path: PathBuf,
    /// The end of the last complete line consumed.
    offset: u64,
    /// Lines consumed (blank ones included), for line numbers.
    lines: usize,
    /// The last bytes consumed, compared with the file at each read.
    check: Vec<u8>,
}

impl LineTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            lines: 0,
            check: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines completed since the last call. A file that does not exist (yet) reads as empty.
    pub fn read(&mut self) -> io::Result<Chunk> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let reset = self.offset > 0;
                self.restart();
                return Ok(Chunk {
                    reset,
                    lines: Vec::new(),
                });
            }
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let reset = len < self.offset || !self.unchanged(&mut f)?;
        if reset {
            self.restart();
        }
        let want = (len - self.offset).min(MAX_READ);
        let mut buf = Vec::with_capacity(want as usize);
        f.seek(SeekFrom::Start(self.offset))?;
        (&mut f).take(want).read_to_end(&mut buf)?;
        let mut out = Vec::new();
        let mut start = 0usize;
        while start < buf.len() {
            let (end, next) = match buf[start..].iter().position(|&b| b == b'\n') {
                Some(i) => (start + i, start + i + 1),
                // The writer may be mid-line: wait for the rest, unless it is already whole.
                None if is_whole_json(&buf[start..]) => (buf.len(), buf.len()),
                None => break,
            };
            self.lines += 1;
            let line = &buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(TailLine {
                    number: self.lines,
                    offset: self.offset + start as u64,
                    len: line.len() as u64,
                    text: String::from_utf8_lossy(line).into_owned(),
                });
            }
            start = next;
        }
        if start > 0 {
            let consumed = &buf[..start];
            self.check = consumed[consumed.len().saturating_sub(CHECK_BYTES)..].to_vec();
            self.offset += start as u64;
        }
        Ok(Chunk { reset, lines: out })
    }

    fn restart(&mut self) {
        self.offset = 0;
        self.lines = 0;
        self.check.clear();
    }

    /// Whether the bytes before `offset` are still the ones read last time.
    fn unchanged(&self, f: &mut File) -> io::Result<bool> {
        if self.check.is_empty() {
            return Ok(true);
        }
        let at = self.offset - self.check.len() as u64;
        f.seek(SeekFrom::Start(at))?;
        let mut now = vec![0u8; self.check.len()];
        match f.read_exact(&mut now) {
            Ok(()) => Ok(now == self.check),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn is_whole_json(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    // Only objects and arrays: a bare number like `12` could be the start of `123`.
    matches!(t.first(), Some(b'{' | b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn texts(c: &Chunk) -> Vec<&str> {
        c.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn reads_only_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut t = LineTail::new(&p);
        assert_eq!(t.read().unwrap(), Chunk::default(), "no file yet");
        append(&p, "{\"step\":1}\n{\"step\":2}\n");
        let c = t.read().unwrap();
        assert_eq!(texts(&c), ["{\"step\":1}", "{\"step\":2}"]);
        assert_eq!(c.lines[1].number, 2);
        assert_eq!(c.lines[1].offset, 11);
        assert!(t.read().unwrap().lines.is_empty());
        append(&p, "{\"step\":3}\n");
        assert_eq!(texts(&t.read().unwrap()), ["{\"step\":3}"]);
    }

    #[test]
    fn a_half_written_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let mut t = LineTail::new(&p);
        append(&p, "{\"step\":1}\n{\"step\":2,\"rew");
        assert_eq!(texts(&t.read().unwrap()), ["{\"step\":1}"]);
        assert!(t.read().unwrap().lines.is_empty(), "still half-written");
        append(&p, "ard\":0.5}\n");
        let c = t.read().unwrap();
        assert_eq!(texts(&c), ["{\"step\":2,\"reward\":0.5}"]);
        assert_eq!(c.lines[0].number, 2);
        assert!(!c.reset);
    }

    #[test]
    fn a_whole_last_line_without_newline_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        append(&p, "{\"step\":1}\n\n{\"step\":2}");
        let mut t = LineTail::new(&p);
        let c = t.read().unwrap();
        assert_eq!(texts(&c), ["{\"step\":1}", "{\"step\":2}"]);
        assert_eq!(c.lines[1].number, 3, "blank lines still count");
        // Its newline arriving later adds nothing.
        append(&p, "\n");
        assert!(t.read().unwrap().lines.is_empty());
    }

    #[test]
    fn a_rewritten_file_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        append(&p, "{\"step\":1,\"t\":1.0}\n{\"step\":2,\"t\":2.0}\n");
        let mut t = LineTail::new(&p);
        assert_eq!(t.read().unwrap().lines.len(), 2);
        // A resume keeps step 1, then appends a new step 2 and 3: longer than before, different
        // bytes where the old step 2 was.
        std::fs::write(
            &p,
            "{\"step\":1,\"t\":1.0}\n{\"step\":2,\"t\":2.5}\n{\"step\":3,\"t\":3.0}\n",
        )
        .unwrap();
        let c = t.read().unwrap();
        assert!(c.reset);
        assert_eq!(c.lines.len(), 3);
        // Truncated to nothing.
        std::fs::write(&p, "").unwrap();
        let c = t.read().unwrap();
        assert!(c.reset && c.lines.is_empty());
    }
}
