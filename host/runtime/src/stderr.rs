//! A stage's stderr, kept in memory (its last [`STDERR_TAIL`] bytes) so that
//! a crash can be explained: Rust's panic handler writes the panic message
//! there just before the guest traps.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once its capacity is
//! full; a chatty stage must not die of that, so this pipe keeps a tail
//! instead and never refuses a write.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of stderr kept per invocation: enough for a panic message and a
/// few lines before it.
pub const STDERR_TAIL: usize = 16 << 10;

/// The last bytes a stage wrote to stderr. Clones share the buffer.
#[derive(Clone, Default)]
pub struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock().unwrap();
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let over = (buf.len() + bytes.len()).saturating_sub(STDERR_TAIL);
        buf.drain(..over);
        buf.extend(bytes);
    }

    /// What is kept, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let buf = self.buf.lock().unwrap();
        let (a, b) = buf.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// The message of the last Rust panic in `stderr`, on one line: the text
/// after `panicked at <file>:<line>:<col>:` up to the `note:` line that
/// follows it.
pub fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind(" panicked at ")?;
    let after = &stderr[start..];
    // The location line ends with ":\n" (Rust 1.73+); older ones put the
    // message on the same line in quotes: `panicked at 'msg', src/lib.rs:1:2`.
    let (location, rest) = after.split_once('\n').unwrap_or((after, ""));
    let message: Vec<&str> = if location.ends_with(':') {
        rest.lines().take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace:")).collect()
    } else {
        let quoted = location.split_once(" panicked at '").map(|(_, m)| m).unwrap_or(location);
        vec![quoted.rsplit_once("', ").map(|(m, _)| m).unwrap_or(quoted)]
    };
    let message = message.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
    (!message.is_empty()).then_some(message)
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_message_is_found_on_one_line() {
        let stderr = "starting\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nthe image is upside down\nat row 3\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("the image is upside down at row 3"));
        assert_eq!(panic_message("thread 'main' panicked at 'boom', src/main.rs:2:5\n").as_deref(), Some("boom"));
        assert_eq!(panic_message("just some logging\n"), None);
    }

    #[test]
    fn only_the_tail_is_kept() {
        let tail = StderrTail::default();
        tail.push(&vec![b'a'; STDERR_TAIL]);
        tail.push(b"end");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_TAIL);
        assert!(text.ends_with("aend"));
        tail.push(&vec![b'b'; 3 * STDERR_TAIL]);
        assert_eq!(tail.text(), "b".repeat(STDERR_TAIL));
    }
}
