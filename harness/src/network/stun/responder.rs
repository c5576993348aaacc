//! The server side: four sockets (two addresses × two ports) answered
//! from one thread.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use super::client::receive;
use super::message::{Attribute, Class, Message};
use crate::common::error::{Error, Result};
use crate::kernel::sys;

/// The SOFTWARE of every answer.
const SOFTWARE: &str = concat!("netns-harness ", env!("CARGO_PKG_VERSION"));

/// A STUN server for NAT behaviour discovery (RFC 5780): it answers
/// Binding Requests on two addresses and two ports, from the socket a
/// request's CHANGE-REQUEST asks for.
///
/// Its sockets are made in the network namespace of the thread that
/// calls [`Responder::start`] and stay there; a thread of its own serves
/// them until the `Responder` is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use netns_harness::stun::Responder;
///
/// // From a thread in the namespace of the lab's outside host:
/// let responder = Responder::start("203.0.113.1".parse()?, "203.0.113.2".parse()?, [3478, 3479])?;
/// let [primary, ..] = responder.addrs();
/// println!("STUN on {primary}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Responder {
    addrs: [SocketAddr; 4],
    /// Closed on drop: the serving thread's signal to stop.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// Binds UDP sockets on `primary` and `alternate`, each on both
    /// `ports`, in the calling thread's network namespace, and serves them
    /// from a thread of its own.
    ///
    /// A port of 0 is a free port the kernel picks on `primary`, then
    /// taken on `alternate` too. The two addresses must differ, be of the
    /// same family and not be unspecified (an answer says which address it
    /// came from); so must the two ports, unless both are 0.
    ///
    /// Each request is answered, from the socket its CHANGE-REQUEST asks
    /// for (the other address, the other port, or both), with
    /// XOR-MAPPED-ADDRESS and MAPPED-ADDRESS (the request's source),
    /// RESPONSE-ORIGIN and SOURCE-ADDRESS (the answering socket),
    /// OTHER-ADDRESS and CHANGED-ADDRESS (the other address and the other
    /// port of the socket the request came to, RFC 5780 section 7.1), and
    /// SOFTWARE. Anything else that arrives is dropped.
    pub fn start(primary: IpAddr, alternate: IpAddr, ports: [u16; 2]) -> Result<Responder> {
        let operation = format!(
            "start a STUN responder on {primary} and {alternate}, ports {} and {}",
            ports[0], ports[1]
        );
        let refuse = |reason: &str| {
            Error::os(
                operation.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, reason.to_owned()),
            )
        };
        if primary == alternate {
            return Err(refuse("the primary and alternate addresses must differ"));
        }
        if primary.is_ipv4() != alternate.is_ipv4() {
            return Err(refuse("the two addresses must be of the same family"));
        }
        if primary.is_unspecified() || alternate.is_unspecified() {
            return Err(refuse("the addresses must be specific, not unspecified"));
        }
        if ports[0] == ports[1] && ports[0] != 0 {
            return Err(refuse("the two ports must differ"));
        }
        let bind = |addr: SocketAddr| {
            let socket = UdpSocket::bind(addr)
                .map_err(|e| Error::os(format!("bind the STUN responder's socket {addr}"), e))?;
            let addr = socket
                .local_addr()
                .map_err(|e| Error::os("read the STUN responder's socket address", e))?;
            Ok::<_, Error>((socket, addr))
        };
        let (p0, p0_addr) = bind(SocketAddr::new(primary, ports[0]))?;
        let (p1, p1_addr) = bind(SocketAddr::new(primary, ports[1]))?;
        let (a0, a0_addr) = bind(SocketAddr::new(alternate, p0_addr.port()))?;
        let (a1, a1_addr) = bind(SocketAddr::new(alternate, p1_addr.port()))?;
        let addrs = [p0_addr, p1_addr, a0_addr, a1_addr];
        let (stop_read, stop_write) =
            sys::pipe().map_err(|e| Error::os("create the STUN responder's stop pipe", e))?;
        let server = Server {
            sockets: [p0, p1, a0, a1],
            addrs,
        };
        let thread = std::thread::Builder::new()
            .name("netns-harness-stun".into())
            .spawn(move || server.serve(&stop_read))
            .map_err(|e| Error::os("start the STUN responder's thread", e))?;
        tracing::debug!(?addrs, "STUN responder started");
        Ok(Responder {
            addrs,
            stop: Some(stop_write),
            thread: Some(thread),
        })
    }

    /// The four addresses it answers on: primary address with the first
    /// and the second port, then the alternate address with the first and
    /// the second port. A client starts at the first.
    pub fn addrs(&self) -> [SocketAddr; 4] {
        self.addrs
    }
}

impl Drop for Responder {
    /// Stops the serving thread (closing the pipe wakes it) and waits for
    /// it; the sockets are closed when it ends.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!(addrs = ?self.addrs, "the STUN responder's thread panicked");
        }
    }
}

/// What the serving thread owns. A socket's index is `2 × address +
/// port`: 0 and 1 on the primary address, 2 and 3 on the alternate.
struct Server {
    sockets: [UdpSocket; 4],
    addrs: [SocketAddr; 4],
}

impl Server {
    /// Answers requests until `stop` is readable (its write end closed).
    fn serve(&self, stop: &OwnedFd) {
        let mut buf = [0; 2048];
        loop {
            let mut fds = [
                PollFd::new(&self.sockets[0], PollFlags::IN),
                PollFd::new(&self.sockets[1], PollFlags::IN),
                PollFd::new(&self.sockets[2], PollFlags::IN),
                PollFd::new(&self.sockets[3], PollFlags::IN),
                PollFd::new(stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!(addrs = ?self.addrs, "the STUN responder stops: poll failed: {e}");
                    return;
                }
            }
            let ready = fds.map(|fd| !fd.revents().is_empty());
            if ready[4] {
                return;
            }
            for index in (0..4).filter(|&i| ready[i]) {
                loop {
                    match receive(&self.sockets[index], &mut buf) {
                        Ok(Some((len, from))) => self.answer(index, &buf[..len], from),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(on = %self.addrs[index], "STUN receive failed: {e}");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Answers `datagram`, which came to socket `index` from `from`.
    fn answer(&self, index: usize, datagram: &[u8], from: SocketAddr) {
        let request = match Message::decode(datagram) {
            Ok(message) if message.class == Class::Request => message,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(on = %self.addrs[index], %from, "STUN datagram dropped: {e}");
                return;
            }
        };
        let change = request.change();
        let reply_index = index ^ (usize::from(change.ip) * 2 + usize::from(change.port));
        let origin = self.addrs[reply_index];
        let other = self.addrs[index ^ 3];
        let response = Message {
            class: Class::Success,
            transaction: request.transaction,
            attributes: vec![
                Attribute::XorMappedAddress(from),
                Attribute::MappedAddress(from),
                Attribute::ResponseOrigin(origin),
                Attribute::OtherAddress(other),
                Attribute::SourceAddress(origin),
                Attribute::ChangedAddress(other),
                Attribute::Software(SOFTWARE.to_owned()),
            ],
        };
        if let Err(e) = self.sockets[reply_index].send_to(&response.encode(), from) {
            tracing::debug!(%origin, %from, "STUN answer not sent: {e}");
        }
    }
}
