//! The client side: one Binding transaction, retransmitted on lab-short
//! intervals, and the datagram plumbing the responder shares.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::net::RecvFlags;

use super::message::{Change, Class, Message, TransactionId};
use crate::common::error::{Error, Result};
use crate::kernel::sys;

/// The first retransmission interval; it doubles after each send
/// (RFC 5389, section 7.2.1, with a lab's round trips instead of the
/// internet's).
const FIRST_INTERVAL: Duration = Duration::from_millis(100);

/// How long to wait for an answer that may rightly never come (a
/// filtering test, hairpinning): three sends, 100, 200 and 400 ms apart.
pub(super) const MAY_NOT_ANSWER: Duration = Duration::from_millis(700);

/// The largest datagram read; STUN messages here are far smaller.
const DATAGRAM: usize = 2048;

/// A success response to one transaction, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Response {
    /// The request's source as the server saw it.
    pub(super) mapped: SocketAddr,
    /// The datagram's real source.
    pub(super) source: SocketAddr,
    /// Where the server says it answered from (RESPONSE-ORIGIN).
    pub(super) origin: Option<SocketAddr>,
    /// The server's other address and port (OTHER-ADDRESS).
    pub(super) other: Option<SocketAddr>,
}

/// Sends a Binding Request from `socket` to `server` and returns the
/// mapped address it answers with.
///
/// The request is sent again 100 ms later, then after 200 ms, 400 ms and
/// so on (RFC 5389's retransmissions at a lab's pace) until an answer
/// comes or `timeout` has passed; then the error is an [`Error::Os`] of
/// kind [`std::io::ErrorKind::TimedOut`]. Datagrams that are not the
/// answer are read and dropped.
///
/// ```no_run
/// use std::net::UdpSocket;
/// use std::time::Duration;
/// use netns_harness::stun;
///
/// let socket = UdpSocket::bind("0.0.0.0:0")?;
/// let mapped = stun::binding(&socket, "203.0.113.1:3478".parse()?, Duration::from_secs(2))?;
/// println!("the world sees this socket as {mapped}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn binding(socket: &UdpSocket, server: SocketAddr, timeout: Duration) -> Result<SocketAddr> {
    transaction(socket, server, Change::default(), timeout)?
        .map(|response| response.mapped)
        .ok_or_else(|| no_answer(server, timeout))
}

/// The error of a transaction with `server` that got no answer.
pub(super) fn no_answer(server: SocketAddr, timeout: Duration) -> Error {
    Error::os(
        format!("get a STUN binding from {server}"),
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ),
    )
}

/// One Binding transaction, with a CHANGE-REQUEST when `change` asks for
/// one: the answer, or `None` when none came within `timeout`.
pub(super) fn transaction(
    socket: &UdpSocket,
    server: SocketAddr,
    change: Change,
    timeout: Duration,
) -> Result<Option<Response>> {
    let id = transaction_id();
    let request = Message::request(id, change).encode();
    let failed = |e| Error::os(format!("get a STUN binding from {server}"), e);
    exchange(
        socket,
        socket,
        server,
        &request,
        timeout,
        |message, source| {
            if message.class != Class::Success || message.transaction != id {
                return Ok(None);
            }
            let mapped = message.mapped().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the answer has no (XOR-)MAPPED-ADDRESS",
                )
            })?;
            Ok(Some(Response {
                mapped,
                source,
                origin: message.origin(),
                other: message.other(),
            }))
        },
    )
    .map_err(failed)
}

/// Whether a Binding Request sent from `from` to `target` reaches `to`
/// within `timeout` (RFC 5780, section 4.5: `target` is `to`'s mapped
/// address).
pub(super) fn reaches(
    from: &UdpSocket,
    to: &UdpSocket,
    target: SocketAddr,
    timeout: Duration,
) -> Result<bool> {
    let id = transaction_id();
    let request = Message::request(id, Change::default()).encode();
    let arrived = exchange(from, to, target, &request, timeout, |message, _| {
        Ok((message.class == Class::Request && message.transaction == id).then_some(()))
    })
    .map_err(|e| Error::os(format!("send a STUN request to {target} (hairpinning)"), e))?;
    Ok(arrived.is_some())
}

/// Sends `request` from `sender` to `target` on the retransmission
/// schedule until `accept` takes a datagram `receiver` got, or `timeout`
/// has passed.
fn exchange<T>(
    sender: &UdpSocket,
    receiver: &UdpSocket,
    target: SocketAddr,
    request: &[u8],
    timeout: Duration,
    mut accept: impl FnMut(Message, SocketAddr) -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let mut buf = [0; DATAGRAM];
    for wait in schedule(timeout) {
        sender.send_to(request, target)?;
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || !sys::poll_readable(receiver.as_fd(), Some(left))? {
                break;
            }
            while let Some((len, source)) = receive(receiver, &mut buf)? {
                let Ok(message) = Message::decode(&buf[..len]) else {
                    continue;
                };
                if let Some(accepted) = accept(message, source)? {
                    return Ok(Some(accepted));
                }
            }
        }
    }
    Ok(None)
}

/// The waits after each send: 100 ms, then twice the last, the last cut
/// so that they add up to `total`.
pub(super) fn schedule(total: Duration) -> Vec<Duration> {
    let mut waits = Vec::new();
    let (mut sum, mut next) = (Duration::ZERO, FIRST_INTERVAL);
    while sum < total {
        let wait = next.min(total - sum);
        waits.push(wait);
        sum += wait;
        next *= 2;
    }
    waits
}

/// A datagram waiting on `socket`, without blocking: its length (cut to
/// `buf`) and source, or `None` when there is none.
pub(super) fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<Option<(usize, SocketAddr)>> {
    match rustix::net::recvfrom(socket, &mut *buf, RecvFlags::DONTWAIT) {
        Ok((len, _, Some(source))) => {
            let source = SocketAddr::try_from(source).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a datagram from a non-IP address",
                )
            })?;
            Ok(Some((len.min(buf.len()), source)))
        }
        Ok((_, _, None)) => Ok(None),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A fresh transaction id: the hash of a counter under randomly keyed
/// SipHash (std's [`RandomState`]), unique within the process and
/// unpredictable enough for a lab.
fn transaction_id() -> TransactionId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut hasher = state.build_hasher();
        hasher.write_u64(count);
        hasher.write_u64(salt);
        hasher.finish().to_be_bytes()
    };
    let (high, low) = (half(0), half(1));
    let mut id = TransactionId::default();
    id[..8].copy_from_slice(&high);
    id[8..].copy_from_slice(&low[..4]);
    id
}
