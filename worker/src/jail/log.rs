//! nsjail's own log, read from its pipe under a byte bound: each line at
//! debug level, and the last few kept to explain a failure. A script can
//! reach nothing of this pipe, but nsjail writes to it whatever it likes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;

/// nsjail log lines kept per jail to explain a failure.
const LOG_TAIL_LINES: usize = 30;
/// Longest nsjail log line kept; the rest of a longer line is discarded
/// unread into memory, so a flood on the log pipe costs no server memory.
const LOG_LINE_MAX: usize = 1000;
const LOG_READ_CHUNK: usize = 16 * 1024;

/// The last lines nsjail logged for one jail.
#[derive(Clone, Default)]
pub(super) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub(super) fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// Reads nsjail's log pipe until it closes: logs each line at debug level and
/// keeps the last few. Memory stays bounded whatever arrives: at most one
/// chunk plus one line of `LOG_LINE_MAX` bytes is held, and the rest of a
/// longer line is dropped as it is read.
pub(super) async fn follow_log(id: u64, pipe: pipe::Receiver, tail: LogTail) {
    let mut chunk = vec![0u8; LOG_READ_CHUNK];
    let mut lines = LineCutter::default();
    loop {
        if pipe.readable().await.is_err() {
            break;
        }
        match pipe.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => lines.feed(&chunk[..n], |line| {
                tracing::debug!(worker = id, "nsjail: {line}");
                tail.push(line);
            }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
    }
    if let Some(line) = lines.rest() {
        tail.push(line);
    }
}

/// Splits a byte stream into lines of at most `LOG_LINE_MAX` bytes.
#[derive(Default)]
struct LineCutter {
    line: Vec<u8>,
}

impl LineCutter {
    fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let piece = &bytes[..end.unwrap_or(bytes.len())];
            let room = LOG_LINE_MAX.saturating_sub(self.line.len());
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            match end {
                Some(end) => {
                    emit(String::from_utf8_lossy(&self.line).into_owned());
                    self.line.clear();
                    bytes = &bytes[end + 1..];
                }
                None => bytes = &[],
            }
        }
    }

    fn rest(self) -> Option<String> {
        (!self.line.is_empty()).then(|| String::from_utf8_lossy(&self.line).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_their_rest_dropped() {
        let mut cutter = LineCutter::default();
        let mut lines = Vec::new();
        cutter.feed(b"first\nsec", |l| lines.push(l));
        cutter.feed(b"ond\n", |l| lines.push(l));
        // A line far over the bound, fed in pieces without a newline.
        for _ in 0..100 {
            cutter.feed(&[b'A'; 4096], |l| lines.push(l));
            assert!(cutter.line.len() <= LOG_LINE_MAX);
        }
        cutter.feed(b"AAA\nlast", |l| lines.push(l));
        assert_eq!(lines[..2], ["first".to_string(), "second".to_string()]);
        assert_eq!(lines[2], "A".repeat(LOG_LINE_MAX));
        assert_eq!(lines.len(), 3);
        assert_eq!(cutter.rest().as_deref(), Some("last"));
    }
}
