//! A test container's output on its way to libtest: forwarded through
//! `print!` in whole lines as it arrives (so libtest's capture and the
//! terminal get readable text), with bounded memory whatever the body
//! writes.
//!
//! At most [`FORWARD_LIMIT`] bytes are forwarded as they come; past that,
//! only the last [`TAIL_BYTES`] are kept, and printed at the end after a
//! line saying how much was left out. A line longer than [`LONG_LINE`] is
//! forwarded in pieces.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::kernel::sys;

/// How much of a test's output is forwarded as it arrives.
pub(crate) const FORWARD_LIMIT: usize = 1 << 20;
/// How much of the rest is kept, and shown at the end.
pub(crate) const TAIL_BYTES: usize = 64 << 10;
/// The longest piece of a line held back while waiting for its end.
pub(crate) const LONG_LINE: usize = 64 << 10;

/// Output on its way to a sink (`print!` in the runner).
pub(crate) struct Forwarder<F: FnMut(&[u8])> {
    sink: F,
    pending: Vec<u8>,
    forwarded: usize,
    tail: VecDeque<u8>,
    left_out: u64,
}

impl<F: FnMut(&[u8])> Forwarder<F> {
    pub(crate) fn new(sink: F) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            forwarded: 0,
            tail: VecDeque::new(),
            left_out: 0,
        }
    }

    /// Takes bytes as they arrive; forwards the complete lines among them.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        let end = if self.pending.len() > LONG_LINE {
            self.pending.len()
        } else {
            self.pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        };
        if end > 0 {
            let lines: Vec<u8> = self.pending.drain(..end).collect();
            self.emit(&lines);
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        let now = bytes.len().min(FORWARD_LIMIT - self.forwarded);
        if now > 0 {
            (self.sink)(&bytes[..now]);
            self.forwarded += now;
        }
        self.tail.extend(&bytes[now..]);
        let excess = self.tail.len().saturating_sub(TAIL_BYTES);
        self.tail.drain(..excess);
        self.left_out += excess as u64;
    }

    /// Forwards what is still pending, and the kept tail after a line
    /// saying how much was left out.
    pub(crate) fn finish(mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.emit(&pending);
        if self.left_out > 0 {
            let note = format!(
                "\n[netns-harness: {} bytes of output left out; the first {} KiB and the last {} KiB are shown]\n",
                self.left_out,
                FORWARD_LIMIT >> 10,
                TAIL_BYTES >> 10
            );
            (self.sink)(note.as_bytes());
        }
        let tail: Vec<u8> = self.tail.drain(..).collect();
        if !tail.is_empty() {
            (self.sink)(&tail);
        }
    }
}

fn print(bytes: &[u8]) {
    print!("{}", String::from_utf8_lossy(bytes));
}

/// How long output may still come after the body reported how it ended.
const DRAIN: Duration = Duration::from_secs(1);

/// Forwards the container's output `out` and reads its result from
/// `result`, until both ended or `deadline` passes. Returns the result, or
/// `None` at the deadline. With `keep_on`, a result that satisfies it ends
/// the wait at once (the container stays alive, its output open).
pub(crate) fn watch(
    out: Option<File>,
    mut result: File,
    deadline: Instant,
    keep_on: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = out;
    let mut forwarder = Forwarder::new(print);
    let mut report: Option<Vec<u8>> = None;
    let mut chunk = vec![0u8; 64 << 10];
    // Once the result is in, output gets a short grace to end.
    let mut end = deadline;
    loop {
        if let Some(r) = &report
            && (out.is_none() || keep_on(r))
        {
            break;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds = Vec::new();
        if let Some(out) = &out {
            fds.push(out.as_raw_fd());
        }
        if report.is_none() {
            fds.push(result.as_raw_fd());
        }
        let Some(ready) = sys::poll_any(&fds, left)? else {
            continue;
        };
        if ready == 0
            && let Some(file) = &mut out
        {
            let n = file.read(&mut chunk)?;
            if n == 0 {
                out = None;
            } else {
                forwarder.push(&chunk[..n]);
            }
        } else {
            let mut bytes = Vec::new();
            result.read_to_end(&mut bytes)?;
            report = Some(bytes);
            end = end.min(Instant::now() + DRAIN);
        }
    }
    forwarder.finish();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut forwarder = Forwarder::new(|b: &[u8]| seen.push(b.to_vec()));
        for chunk in chunks {
            forwarder.push(chunk);
        }
        forwarder.finish();
        seen
    }

    #[test]
    fn whole_lines_go_out_as_they_come() {
        assert_eq!(
            forward(&[b"a\nb", b"c\nd"]),
            vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"d".to_vec()]
        );
    }

    #[test]
    fn a_long_line_goes_out_in_pieces() {
        let long = vec![b'x'; LONG_LINE + 1];
        let seen = forward(&[&long]);
        assert_eq!(seen, vec![long]);
    }

    #[test]
    fn past_the_limit_only_a_note_and_the_tail_remain() {
        let total = FORWARD_LIMIT + 3 * TAIL_BYTES;
        let mut chunks = Vec::new();
        let piece = vec![b'y'; 1 << 16];
        let mut sent = 0;
        while sent < total {
            chunks.push(piece.as_slice());
            sent += piece.len();
        }
        let seen = forward(&chunks);
        let forwarded: usize = seen.iter().map(Vec::len).sum();
        let note = String::from_utf8_lossy(&seen[seen.len() - 2]).into_owned();
        assert!(
            note.contains(&format!(
                "{} bytes of output left out",
                sent - FORWARD_LIMIT - TAIL_BYTES
            )),
            "{note}"
        );
        assert_eq!(seen.last().map(Vec::len), Some(TAIL_BYTES));
        assert_eq!(forwarded, FORWARD_LIMIT + TAIL_BYTES + note.len());
    }
}
