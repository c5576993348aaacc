//! A small synchronous netlink client over a `netlink-sys` socket: each
//! request is a batch of typed `netlink-packet-core` messages (of
//! `netlink-packet-route` or `netlink-packet-netfilter`) sent in one
//! `send`, then a read of its acknowledgement or the end of its dump.
//! Used for rtnetlink (`rtnl`), nf_tables (`nftables`) and conntrack
//! (`conntrack`).
//!
//! No read waits forever: a request's replies must all arrive within
//! [`REPLY_TIMEOUT`] (a signal does not restart the wait), and a reply
//! longer than the receive buffer is an error at once, never a wait for
//! the rest of a message that was cut.
//!
//! `netlink-packet-core` parses an error's code but not its extended ack:
//! the kernel's message is read from the bytes it leaves
//! ([`ErrorMessage::header`], [`DoneMessage::extended_ack`]) by
//! [`error_text`] and [`done_text`].
//!
//! A socket belongs to the network namespace of the thread that opened it,
//! whichever thread uses it later; see [`crate::kernel::netns`].

use std::fmt::Display;
use std::io;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneMessage, ErrorMessage, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_ALIGNTO, NetlinkBuffer, NetlinkDeserializable,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NlasIterator, parse_string,
};
use rustix::event::{PollFd, PollFlags, Timespec};

/// `NLMSG_HDRLEN`: the length of `struct nlmsghdr`, all that an ack echoes
/// of a request on a socket with `NETLINK_CAP_ACK`.
const NLMSG_HDRLEN: usize = 16;
/// `NLMSGERR_ATTR_MSG` of `enum nlmsgerr_attrs`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// How often a dump is tried again when the kernel says a change
/// interrupted it (`NLM_F_DUMP_INTR`).
const DUMP_ATTEMPTS: u32 = 5;

/// How long a request's replies may take, all of them: the kernel answers
/// in microseconds, so this only ends a wait that would never end.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The receive buffer: larger than any datagram the kernel sends to a
/// socket that did not ask for more (`NLMSG_GOODSIZE`, 32 KiB at most).
const RECV_BUFFER: usize = 64 * 1024;

/// A request: `payload` with `NLM_F_REQUEST` and `flags` (the length, type
/// and sequence number are set when it is sent).
pub(crate) fn request<I>(payload: I, flags: u16) -> NetlinkMessage<I>
where
    I: NetlinkSerializable,
{
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload))
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
    socket: netlink_sys::Socket,
    seq: u32,
    /// Replies are received here.
    buf: Vec<u8>,
    /// Requests are serialized here: kept, so that sending allocates
    /// nothing after the first request.
    out: Vec<u8>,
    timeout: Duration,
}

impl Socket {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_NETFILTER`)
    /// in the calling thread's namespace, with extended acks (errors carry
    /// the kernel's message) that echo only the request's header.
    ///
    /// # References
    /// `netlink(7)`: `NETLINK_EXT_ACK`, `NETLINK_CAP_ACK`
    pub(crate) fn open(protocol: libc::c_int) -> io::Result<Self> {
        let socket = netlink_sys::Socket::new(protocol as isize)?;
        // Kernels without them still work, with plainer errors.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self::from_socket(socket))
    }

    fn from_socket(socket: netlink_sys::Socket) -> Self {
        Self {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
            out: Vec::new(),
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
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply from the kernel within {:?}", self.timeout),
                ));
            }
            // Round up to a whole millisecond, so that a wait is never 0 ms
            // (a busy loop) before the deadline.
            let ms = left.as_micros().div_ceil(1000);
            let wait = Timespec {
                tv_sec: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from(ms % 1000).unwrap_or(0) * 1_000_000,
            };
            let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&wait)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue, // with what is left of the time
                Err(e) => return Err(e.into()),
            }
            let n = match self
                .socket
                .recv(&mut &mut self.buf[..], libc::MSG_TRUNC | libc::MSG_DONTWAIT)
            {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
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
    /// last of them that carries `NLM_F_ACK` or `NLM_F_DUMP` (nf_tables
    /// batch delimiters carry neither): an ack, or the end of a dump.
    /// Returns the replies that are not acks (answers to `GET`s).
    pub(crate) fn transact<I>(
        &mut self,
        messages: &mut [NetlinkMessage<I>],
    ) -> Result<Vec<I>, Refusal>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
        I::Error: Display,
    {
        self.exchange(messages).map(|(replies, _)| replies)
    }

    /// Dumps what `request` (with `NLM_F_DUMP`) asks for, again if the
    /// kernel says the dump was interrupted by a change.
    pub(crate) fn dump<I>(&mut self, mut request: NetlinkMessage<I>) -> Result<Vec<I>, Refusal>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
        I::Error: Display,
    {
        let mut attempts = 0;
        loop {
            let (replies, interrupted) = self.exchange(std::slice::from_mut(&mut request))?;
            attempts += 1;
            if !interrupted || attempts == DUMP_ATTEMPTS {
                return Ok(replies);
            }
        }
    }

    fn exchange<I>(&mut self, messages: &mut [NetlinkMessage<I>]) -> Result<(Vec<I>, bool), Refusal>
    where
        I: NetlinkSerializable + NetlinkDeserializable,
        I::Error: Display,
    {
        let (first, last) = self.send(messages)?;
        let deadline = Instant::now() + self.timeout;
        let newest = self.seq;
        let in_request = |seq: u32| seq.wrapping_sub(first) <= newest.wrapping_sub(first);
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.receive(deadline)?;
            let mut datagram = &self.buf[..n];
            while let Ok(packet) = NetlinkBuffer::new_checked(datagram) {
                let len = packet.length() as usize;
                let (seq, flags) = (packet.sequence_number(), packet.flags());
                let bytes = &datagram[..len];
                datagram = datagram
                    .get(len.next_multiple_of(usize::from(NLMSG_ALIGNTO))..)
                    .unwrap_or_default();
                if !in_request(seq) {
                    continue; // a late answer to an earlier request
                }
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                let message = NetlinkMessage::<I>::deserialize(bytes).map_err(|e| Refusal {
                    error: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("cannot parse the kernel's reply: {e}"),
                    ),
                    message: None,
                })?;
                let ended = take_reply(message.payload, flags, &mut replies)?;
                if ended && seq == last {
                    return Ok((replies, interrupted));
                }
            }
        }
    }

    /// Numbers, serializes and sends `messages` in one datagram; returns
    /// the first sequence number and the last one that gets an answer
    /// (an acknowledgement or a dump's end).
    fn send<I>(&mut self, messages: &mut [NetlinkMessage<I>]) -> Result<(u32, u32), Refusal>
    where
        I: NetlinkSerializable,
    {
        let first = self.seq.wrapping_add(1);
        let mut last = first;
        self.out.clear();
        for message in messages.iter_mut() {
            self.seq = self.seq.wrapping_add(1);
            message.header.sequence_number = self.seq;
            message.finalize();
            if message.header.flags & (NLM_F_ACK | NLM_F_DUMP) != 0 {
                last = self.seq;
            }
            let start = self.out.len();
            self.out.resize(start + message.buffer_len(), 0);
            message.serialize(&mut self.out[start..]);
        }
        self.socket.send(&self.out, 0)?;
        Ok((first, last))
    }
}

/// The text of an error's extended ack, if the kernel sent one: after the
/// errno comes the request (only its header when `NLM_F_CAPPED`), then
/// the ack's attributes.
fn error_text(error: &ErrorMessage, flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = error.header.get(..NLMSG_HDRLEN)?;
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        NetlinkBuffer::new(echoed).length() as usize
    };
    ack_text(
        error
            .header
            .get(echoed.next_multiple_of(usize::from(NLMSG_ALIGNTO))..)?,
    )
}

/// The text of a failed dump's extended ack: its attributes follow the
/// errno at once.
fn done_text(done: &DoneMessage, flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    ack_text(&done.extended_ack)
}

/// `NLMSGERR_ATTR_MSG` among an ack's attributes.
fn ack_text(attributes: &[u8]) -> Option<String> {
    NlasIterator::new(attributes)
        .map_while(Result::ok)
        .find(|nla| nla.kind() & NLA_TYPE_MASK == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
}

/// The bytes `message` is sent as (with its length and type set), for the
/// round-trip tests of the modules that build requests.
#[cfg(test)]
pub(crate) fn bytes_of<I: NetlinkSerializable>(mut message: NetlinkMessage<I>) -> Vec<u8> {
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Takes one reply of a request: a message into `replies`, a refusal as
/// the error. Returns whether it ends an answer (an acknowledgement or the
/// end of a dump).
fn take_reply<I>(
    payload: NetlinkPayload<I>,
    flags: u16,
    replies: &mut Vec<I>,
) -> Result<bool, Refusal> {
    match payload {
        NetlinkPayload::Error(error) if error.code.is_some() => Err(Refusal {
            error: error.to_io(),
            message: error_text(&error, flags),
        }),
        NetlinkPayload::Done(done) if done.code < 0 => Err(Refusal {
            error: io::Error::from_raw_os_error(-done.code),
            message: done_text(&done, flags),
        }),
        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => Ok(true),
        NetlinkPayload::InnerMessage(reply) => {
            replies.push(reply);
            Ok(false)
        }
        NetlinkPayload::Overrun(_) => Err(Refusal::from(io::Error::new(
            io::ErrorKind::InvalidData,
            "the kernel reported an overrun of the socket's buffer",
        ))),
        _ => Ok(false), // NLMSG_NOOP
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    use std::os::unix::net::UnixDatagram;

    use netlink_packet_core::{DefaultNla, Emitable, NLMSG_NOOP};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    use super::*;

    /// The attributes an ack carries after the request: a message and the
    /// offset of the attribute it blames.
    fn ack_attributes(text: &str) -> Vec<u8> {
        let mut text = text.as_bytes().to_vec();
        text.push(0);
        let attributes = [
            DefaultNla::new(NLMSGERR_ATTR_MSG, text),
            DefaultNla::new(3, 20u32.to_ne_bytes().to_vec()), // NLMSGERR_ATTR_OFFS
        ];
        let mut bytes = vec![0; attributes.as_slice().buffer_len()];
        attributes.as_slice().emit(&mut bytes);
        bytes
    }

    /// A link request as the kernel echoes it.
    fn echoed_request() -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName("eth0".into()));
        bytes_of(request(RouteNetlinkMessage::NewLink(link), NLM_F_ACK))
    }

    #[test]
    fn ext_ack_message_is_found_after_the_capped_request() {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::EINVAL);
        error.header = echoed_request()[..NLMSG_HDRLEN].to_vec();
        error.header.extend(ack_attributes("bad"));
        let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
        assert_eq!(error_text(&error, flags).as_deref(), Some("bad"));
        assert_eq!(error_text(&error, NLM_F_CAPPED), None);
    }

    #[test]
    fn ext_ack_message_is_found_after_a_whole_request() {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-libc::EINVAL);
        error.header = echoed_request();
        error.header.extend(ack_attributes("bad name"));
        assert_eq!(
            error_text(&error, NLM_F_ACK_TLVS).as_deref(),
            Some("bad name")
        );
    }

    #[test]
    fn ext_ack_message_of_a_failed_dump_follows_the_errno() {
        let mut done = DoneMessage::default();
        done.code = -libc::EOPNOTSUPP;
        done.extended_ack = ack_attributes("no dump here");
        assert_eq!(
            done_text(&done, NLM_F_ACK_TLVS).as_deref(),
            Some("no dump here")
        );
        assert_eq!(done_text(&done, 0), None);
    }

    fn elapsed_of<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let start = Instant::now();
        (f(), start.elapsed())
    }

    /// A request the kernel does not answer: `NLMSG_NOOP` without
    /// `NLM_F_ACK`.
    fn noop() -> NetlinkMessage<RouteNetlinkMessage> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.message_type = NLMSG_NOOP;
        NetlinkMessage::new(header, NetlinkPayload::Noop)
    }

    /// A request for an ack, whatever the "kernel" makes of it.
    fn acked() -> NetlinkMessage<RouteNetlinkMessage> {
        request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_ACK,
        )
    }

    #[test]
    fn a_request_the_kernel_never_answers_times_out() {
        let mut socket = Socket::open(libc::NETLINK_ROUTE)
            .unwrap()
            .with_timeout(Duration::from_millis(200));
        let (result, took) = elapsed_of(|| socket.transact(&mut [noop()]));
        let refusal = result.expect_err("a reply came to a request without NLM_F_ACK");
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

    #[test]
    fn the_kernels_refusal_carries_its_errno() {
        let mut socket = Socket::open(libc::NETLINK_ROUTE).unwrap();
        let mut link = LinkMessage::default();
        link.attributes
            .push(LinkAttribute::IfName("no-such-link0".into()));
        let refusal = socket
            .transact(&mut [request(RouteNetlinkMessage::GetLink(link), NLM_F_ACK)])
            .expect_err("a link that does not exist was found");
        assert_eq!(refusal.error.raw_os_error(), Some(libc::ENODEV));
    }

    /// A socket whose "kernel" is the other end of a datagram socketpair.
    fn seam(timeout: Duration) -> (Socket, UnixDatagram) {
        let (ours, kernel) = UnixDatagram::pair().unwrap();
        // SAFETY: the descriptor is open and ours alone; the netlink socket
        // takes it over.
        let socket = unsafe { netlink_sys::Socket::from_raw_fd(OwnedFd::from(ours).into_raw_fd()) };
        (Socket::from_socket(socket).with_timeout(timeout), kernel)
    }

    #[test]
    fn an_answer_through_the_seam_is_read() {
        let (mut socket, kernel) = seam(Duration::from_secs(5));
        let answer = std::thread::spawn(move || {
            let mut request = [0u8; 256];
            let n = kernel.recv(&mut request).unwrap();
            let request = NetlinkBuffer::new_checked(&request[..n]).unwrap();
            // An ack: errno 0, then the request's header.
            let mut ack = ErrorMessage::default();
            ack.header = request.into_inner()[..NLMSG_HDRLEN].to_vec();
            let mut header = NetlinkHeader::default();
            header.sequence_number = NetlinkBuffer::new(&ack.header).sequence_number();
            let ack =
                NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(ack));
            kernel.send(&bytes_of(ack)).unwrap();
        });
        let replies = socket.transact(&mut [acked()]).unwrap();
        assert!(replies.is_empty());
        answer.join().unwrap();
    }

    #[test]
    fn a_truncated_reply_is_an_error_at_once() {
        let (mut socket, kernel) = seam(Duration::from_secs(5));
        kernel.send(&vec![0u8; RECV_BUFFER + 4096]).unwrap();
        let (result, took) = elapsed_of(|| socket.transact(&mut [acked()]));
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
        let waiter = std::thread::spawn(move || elapsed_of(|| socket.transact(&mut [acked()])));
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
