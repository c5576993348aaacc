//! A small synchronous netlink client: messages are built attribute by
//! attribute and each request is one `write` and a read of its
//! acknowledgement. Used for rtnetlink (links, addresses), nf_tables and
//! conntrack.
//!
//! No read waits forever: a request's replies must all arrive within
//! [`REPLY_TIMEOUT`] (a signal does not restart the wait), and a reply
//! longer than the receive buffer is an error at once, never a wait for
//! the rest of a message that was cut.
//!
//! A socket belongs to the network namespace of the thread that opened it,
//! whichever thread uses it later; see [`crate::netns`].

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;

const NLMSG_HDRLEN: usize = 16;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// How long a request's replies may take, all of them: the kernel answers
/// in microseconds, so this only ends a wait that would never end.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The receive buffer: larger than any datagram the kernel sends to a
/// socket that did not ask for more (`NLMSG_GOODSIZE`, 32 KiB at most).
const RECV_BUFFER: usize = 64 * 1024;

/// `NLM_F_REQUEST`
pub(crate) const F_REQUEST: u16 = 1;
/// `NLM_F_ACK`
pub(crate) const F_ACK: u16 = 4;
/// `NLM_F_EXCL`
pub(crate) const F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`
pub(crate) const F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`
pub(crate) const F_APPEND: u16 = 0x800;
/// `NLM_F_DUMP`
pub(crate) const F_DUMP: u16 = 0x300;

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One netlink message under construction.
pub(crate) struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    /// A message of `kind` with `flags`, followed by the fixed header
    /// `header` of its family (e.g. `ifinfomsg`).
    pub(crate) fn new(kind: u16, flags: u16, header: &[u8]) -> Self {
        let mut buf = vec![0; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(header);
        buf.resize(align(buf.len()), 0);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends an attribute with a raw payload.
    pub(crate) fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub(crate) fn attr_str(self, kind: u16, value: &str) -> Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// Appends a host-order `u32` attribute (rtnetlink's convention).
    pub(crate) fn attr_u32(self, kind: u16, value: u32) -> Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// Appends a network-order `u32` attribute (nf_tables' convention).
    pub(crate) fn attr_be32(self, kind: u16, value: u32) -> Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Message::end`].
    pub(crate) fn begin(mut self, kind: u16) -> Self {
        self.nests.push(self.buf.len());
        self.attr(kind | NLA_F_NESTED, &[])
    }

    /// Appends raw bytes inside the open nest (a nested fixed header).
    pub(crate) fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Closes the innermost nested attribute.
    pub(crate) fn end(mut self) -> Self {
        if let Some(start) = self.nests.pop() {
            let len = u16::try_from(self.buf.len() - start).unwrap_or(u16::MAX);
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// The message's bytes after its netlink header, as a reply's payload
    /// reaches a parser.
    #[cfg(test)]
    pub(crate) fn into_payload(self) -> Vec<u8> {
        self.finish(0).split_off(NLMSG_HDRLEN)
    }

    fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        debug_assert!(self.nests.is_empty(), "unclosed netlink nest");
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// The kernel's refusal of a request: the errno and, when it sent one, its
/// extended-ack message.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: io::Error,
    pub message: Option<String>,
}

impl From<io::Error> for Refusal {
    fn from(error: io::Error) -> Self {
        Self {
            error,
            message: None,
        }
    }
}

/// A netlink socket of one protocol in one namespace.
pub(crate) struct Socket {
    file: File,
    seq: u32,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Socket {
    /// Opens a socket of `protocol` in the calling thread's namespace.
    pub(crate) fn open(protocol: libc::c_int) -> io::Result<Self> {
        Ok(Self::from_fd(sys::netlink_socket(protocol)?))
    }

    fn from_fd(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            seq: 0,
            buf: vec![0; RECV_BUFFER],
            timeout: REPLY_TIMEOUT,
        }
    }

    /// Waits at most `timeout` for a request's replies (tests).
    #[cfg(test)]
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Receives one datagram into the buffer before `deadline`: its length.
    /// A signal does not restart the wait; a datagram longer than the
    /// buffer is an error (`MSG_TRUNC` tells its real length).
    ///
    /// # References
    /// `poll(2)`, `recv(2)`
    fn receive(&mut self, deadline: Instant) -> io::Result<usize> {
        let fd = self.file.as_raw_fd();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from the kernel within {:?}", self.timeout),
                ));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Round up, so that a wait is never 0 ms (a busy loop) before
            // the deadline.
            let ms =
                libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `pfd` is one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue; // with what is left of the time
                }
                return Err(err);
            }
            if ready == 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                    _ => return Err(err),
                }
            };
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a reply of {n} bytes was cut to the {}-byte receive buffer",
                        self.buf.len()
                    ),
                ));
            }
            return Ok(n);
        }
    }

    /// Sends `messages` in one write and waits until the kernel answered the
    /// last of them that carries `F_ACK` or `F_DUMP` (nf_tables batch
    /// delimiters carry neither): an ack, or the end of a dump. Returns the
    /// payloads of the replies that are not acks (answers to `GET`s).
    pub(crate) fn transact(&mut self, messages: Vec<Message>) -> Result<Vec<Vec<u8>>, Refusal> {
        self.exchange(messages).map(|(replies, _)| replies)
    }

    /// Dumps what `request` (with `F_DUMP`) asks for, again if the kernel
    /// says the dump was interrupted by a change.
    pub(crate) fn dump(&mut self, request: impl Fn() -> Message) -> Result<Vec<Vec<u8>>, Refusal> {
        let mut attempts = 0;
        loop {
            let (replies, interrupted) = self.exchange(vec![request()])?;
            attempts += 1;
            if !interrupted || attempts == 5 {
                return Ok(replies);
            }
        }
    }

    fn exchange(&mut self, messages: Vec<Message>) -> Result<(Vec<Vec<u8>>, bool), Refusal> {
        let first = self.seq.wrapping_add(1);
        let mut out = Vec::new();
        let mut last = first;
        for message in messages {
            self.seq = self.seq.wrapping_add(1);
            if message.flags() & (F_ACK | F_DUMP) != 0 {
                last = self.seq;
            }
            out.extend(message.finish(self.seq));
        }
        self.file.write_all(&out)?;
        let deadline = Instant::now() + self.timeout;
        let newest = self.seq;
        let in_request = |seq: u32| seq.wrapping_sub(first) <= newest.wrapping_sub(first);
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.receive(deadline)?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let field = |o: usize| {
                    u32::from_ne_bytes(self.buf[at + o..at + o + 4].try_into().unwrap_or([0; 4]))
                };
                let len = field(0) as usize;
                let kind = u16::from_ne_bytes([self.buf[at + 4], self.buf[at + 5]]);
                let flags = u16::from_ne_bytes([self.buf[at + 6], self.buf[at + 7]]);
                let seq = field(8);
                if len < NLMSG_HDRLEN || at + len > n {
                    break;
                }
                let body = &self.buf[at + NLMSG_HDRLEN..at + len];
                at += align(len);
                if !in_request(seq) {
                    continue; // a late answer to an earlier request
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let errno = body
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        if errno < 0 {
                            return Err(Refusal {
                                error: io::Error::from_raw_os_error(-errno),
                                message: ext_ack_message(body, flags),
                            });
                        }
                        if seq == last {
                            return Ok((replies, interrupted));
                        }
                    }
                    _ => replies.push(body.to_vec()),
                }
            }
        }
    }
}

/// The attributes in `buf` (after a message's fixed header), as (type
/// without the nested and byte-order flags, payload).
pub(crate) fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = buf.get(at..at + NLA_HDRLEN)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        let payload = buf.get(at + NLA_HDRLEN..at + len.max(NLA_HDRLEN))?;
        at += align(len.max(NLA_HDRLEN));
        Some((kind, payload))
    })
}

/// The human-readable message of an extended ack, if the kernel sent one.
fn ext_ack_message(body: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // errno, then the request's header (capped: NETLINK_CAP_ACK), then TLVs.
    let mut at = 4 + NLMSG_HDRLEN;
    while at + NLA_HDRLEN <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([body[at + 2], body[at + 3]]);
        if len < NLA_HDRLEN || at + len > body.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &body[at + NLA_HDRLEN..at + len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        at += align(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_have_their_lengths_and_padding() {
        let msg = Message::new(16, F_REQUEST, &[1, 2, 3])
            .begin(1)
            .attr_str(2, "ab")
            .end()
            .attr_u32(3, 7);
        let bytes = msg.finish(9);
        // header 16 + family header padded to 4 + nest (4 + 4 + "ab\0" padded to 4) + u32 attr 8
        assert_eq!(bytes.len(), 16 + 4 + 4 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 40);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        let nest_len = u16::from_ne_bytes([bytes[20], bytes[21]]);
        let nest_kind = u16::from_ne_bytes([bytes[22], bytes[23]]);
        assert_eq!((nest_len, nest_kind), (12, 1 | NLA_F_NESTED));
        assert_eq!(&bytes[28..31], b"ab\0");
    }

    #[test]
    fn attributes_are_read_back_with_their_payloads() {
        let bytes = Message::new(16, F_REQUEST, &[])
            .attr_str(3, "eth0")
            .begin(18)
            .attr_u32(1, 7)
            .end()
            .finish(1);
        let attrs: Vec<(u16, Vec<u8>)> = attributes(&bytes[NLMSG_HDRLEN..])
            .map(|(k, p)| (k, p.to_vec()))
            .collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (3, b"eth0\0".to_vec()));
        assert_eq!(attrs[1].0, 18);
        let inner: Vec<(u16, &[u8])> = attributes(&attrs[1].1).collect();
        assert_eq!(inner, [(1, &7u32.to_ne_bytes()[..])]);
    }

    #[test]
    fn ext_ack_message_is_found_after_the_capped_request() {
        let mut body = (-22i32).to_ne_bytes().to_vec();
        body.extend([0; NLMSG_HDRLEN]);
        body.extend(8u16.to_ne_bytes());
        body.extend(NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend(b"bad\0");
        assert_eq!(
            ext_ack_message(&body, NLM_F_ACK_TLVS).as_deref(),
            Some("bad")
        );
        assert_eq!(ext_ack_message(&body, 0), None);
    }

    /// `NLMSG_NOOP`: a request the kernel accepts and, without `F_ACK`,
    /// never answers.
    const NLMSG_NOOP: u16 = 1;

    fn elapsed_of<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let start = Instant::now();
        (f(), start.elapsed())
    }

    #[test]
    fn a_request_the_kernel_never_answers_times_out() {
        let mut socket = Socket::open(libc::NETLINK_ROUTE)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let (result, took) =
            elapsed_of(|| socket.transact(vec![Message::new(NLMSG_NOOP, F_REQUEST, &[])]));
        let refusal = result.expect_err("a reply came to a request without F_ACK");
        assert_eq!(refusal.error.kind(), io::ErrorKind::TimedOut, "{refusal:?}");
        assert!(
            refusal
                .error
                .to_string()
                .contains("no reply from the kernel within 200ms")
        );
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    /// A socket whose "kernel" is the other end of a datagram socketpair.
    fn seam(timeout: Duration) -> (Socket, std::os::unix::net::UnixDatagram) {
        let (ours, kernel) = std::os::unix::net::UnixDatagram::pair().unwrap();
        (
            Socket::from_fd(OwnedFd::from(ours)).with_timeout(timeout),
            kernel,
        )
    }

    #[test]
    fn an_answer_through_the_seam_is_read() {
        let (mut socket, kernel) = seam(Duration::from_secs(5));
        let answer = std::thread::spawn(move || {
            let mut request = [0u8; 256];
            let n = kernel.recv(&mut request).unwrap();
            assert!(n >= NLMSG_HDRLEN);
            // An ack: errno 0, then the request's header.
            let mut ack = Message::new(NLMSG_ERROR, 0, &0i32.to_ne_bytes())
                .raw(&request[..NLMSG_HDRLEN])
                .finish(u32::from_ne_bytes(request[8..12].try_into().unwrap()));
            ack.truncate(NLMSG_HDRLEN + 4 + NLMSG_HDRLEN);
            kernel.send(&ack).unwrap();
        });
        let replies = socket
            .transact(vec![Message::new(16, F_REQUEST | F_ACK, &[])])
            .unwrap();
        assert!(replies.is_empty());
        answer.join().unwrap();
    }

    #[test]
    fn a_truncated_reply_is_an_error_at_once() {
        let (mut socket, kernel) = seam(Duration::from_secs(5));
        kernel.send(&vec![0u8; RECV_BUFFER + 4096]).unwrap();
        let (result, took) =
            elapsed_of(|| socket.transact(vec![Message::new(16, F_REQUEST | F_ACK, &[])]));
        let refusal = result.expect_err("a truncated reply was accepted");
        assert_eq!(refusal.error.kind(), io::ErrorKind::InvalidData);
        let expected = format!("a reply of {} bytes was cut", RECV_BUFFER + 4096);
        assert!(refusal.error.to_string().contains(&expected), "{refusal:?}");
        assert!(took < Duration::from_secs(1), "it waited {took:?}");
    }

    extern "C" fn ignore(_: libc::c_int) {}

    #[test]
    fn signals_do_not_restart_the_wait() {
        use std::os::unix::thread::JoinHandleExt;
        // A handler (not SIG_IGN), so that each signal interrupts poll.
        // SAFETY: a zeroed sigaction with a valid handler and no flags.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as libc::sighandler_t;
            assert_eq!(
                libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()),
                0
            );
        }
        let (mut socket, _kernel) = seam(Duration::from_millis(300));
        let waiter = std::thread::spawn(move || {
            elapsed_of(|| socket.transact(vec![Message::new(16, F_REQUEST | F_ACK, &[])]))
        });
        let thread = waiter.as_pthread_t();
        // A signal every 10 ms for 3 s: a wait that restarted its 300 ms
        // after each would last the whole 3 s.
        let until = Instant::now() + Duration::from_secs(3);
        while !waiter.is_finished() && Instant::now() < until {
            // SAFETY: the thread is joinable (not yet joined), so its
            // pthread_t is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGURG) };
            std::thread::sleep(Duration::from_millis(10));
        }
        let (result, took) = waiter.join().unwrap();
        let refusal = result.expect_err("no reply was sent");
        assert_eq!(refusal.error.kind(), io::ErrorKind::TimedOut, "{refusal:?}");
        assert!(took < Duration::from_secs(1), "the wait lasted {took:?}");
    }
}
