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
mod tests;
