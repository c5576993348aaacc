//! NAT behaviour discovery (RFC 5780, section 4): the mapping, filtering
//! and hairpinning tests, each from fresh sockets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use super::client::{self, MAY_NOT_ANSWER, Response};
use super::message::Change;
use crate::common::error::{Error, Result};
use crate::common::nat::{Filtering, Mapping};

/// How the network between the calling namespace and a STUN server
/// translates, as [`classify`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Whether the server saw another address than the client's own: a
    /// NAT is on the way.
    pub translated: bool,
    /// When the NAT reuses a mapping (RFC 5780, section 4.3).
    pub mapping: Mapping,
    /// Which endpoints may send back through a mapping (section 4.4).
    pub filtering: Filtering,
    /// Whether a request sent to a mapped address from behind the same
    /// NAT reaches the mapped socket (section 4.5).
    pub hairpinning: bool,
    /// Every mapping the server reported, in the order they were seen.
    pub observations: Vec<Observation>,
}

/// One mapping a STUN server reported: which local socket, talking to
/// which server address, was seen as which address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Observation {
    /// The client's socket: the source address the route to `server`
    /// picks, and the socket's port.
    pub local: SocketAddr,
    /// Where the request was sent.
    pub server: SocketAddr,
    /// The request's source as the server saw it.
    pub mapped: SocketAddr,
}

impl fmt::Display for Behaviour {
    /// One line, e.g. "NAT: endpoint-independent mapping,
    /// address-and-port-dependent filtering, hairpinning".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}, {}, {}",
            if self.translated { "NAT" } else { "no NAT" },
            self.mapping,
            self.filtering,
            if self.hairpinning {
                "hairpinning"
            } else {
                "no hairpinning"
            }
        )
    }
}

/// Finds out how the network between the calling thread's namespace and
/// the RFC 5780 STUN server at `server` (its primary address and port, e.g.
/// a [`Responder`](super::Responder)'s first address) translates.
///
/// - Mapping (section 4.3): from one socket, a Binding Request to
///   `server`, one to the server's alternate address on the same port,
///   and one to its alternate address and port; the mapping is
///   endpoint-independent when the first two mapped addresses agree,
///   address-dependent when the last two do, address-and-port-dependent
///   otherwise.
/// - Filtering (section 4.4): from a fresh socket, a request to `server`,
///   then one asking for an answer from the other address and port
///   (answered: endpoint-independent), then one asking for an answer from
///   the other port (answered: address-dependent; else
///   address-and-port-dependent).
/// - Hairpinning (section 4.5): a fresh socket learns its mapped address;
///   a second one sends a request there; hairpinning works if the first
///   receives it.
///
/// Each socket is bound to the unspecified address of `server`'s family
/// and port 0. A request that must be answered is retransmitted until
/// `timeout` (an [`Error::Os`] of kind [`std::io::ErrorKind::TimedOut`]
/// after); one that rightly may not be is given at most 700 ms (three
/// sends). A server without OTHER-ADDRESS (not RFC 5780) is an error.
///
/// ```no_run
/// use std::time::Duration;
/// use netns_harness::{Filtering, stun};
///
/// let behaviour = stun::classify("203.0.113.1:3478".parse()?, Duration::from_secs(2))?;
/// println!("{behaviour}");
/// assert_eq!(behaviour.filtering, Filtering::AddressAndPortDependent);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn classify(server: SocketAddr, timeout: Duration) -> Result<Behaviour> {
    let mut discovery = Discovery {
        server,
        timeout,
        observations: Vec::new(),
    };
    let (translated, mapping) = discovery.mapping()?;
    let filtering = discovery.filtering()?;
    let hairpinning = discovery.hairpinning()?;
    Ok(Behaviour {
        translated,
        mapping,
        filtering,
        hairpinning,
        observations: discovery.observations,
    })
}

/// The state of one [`classify`]: the server and what was seen so far.
struct Discovery {
    server: SocketAddr,
    timeout: Duration,
    observations: Vec<Observation>,
}

impl Discovery {
    /// Section 4.3: whether the first mapping is translated, and the
    /// mapping behaviour.
    fn mapping(&mut self) -> Result<(bool, Mapping)> {
        let socket = self.fresh()?;
        let first = self.must(&socket, self.server)?;
        let other = first.other.ok_or_else(|| {
            Error::os(
                format!("classify the NAT with the STUN server {}", self.server),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "its answer has no OTHER-ADDRESS: it does not do RFC 5780 NAT behaviour \
                     discovery",
                ),
            )
        })?;
        let translated = first.mapped != local_addr(&socket, self.server)?;
        let second = self.must(&socket, SocketAddr::new(other.ip(), self.server.port()))?;
        if second.mapped == first.mapped {
            return Ok((translated, Mapping::EndpointIndependent));
        }
        let third = self.must(&socket, other)?;
        let mapping = if third.mapped == second.mapped {
            Mapping::AddressDependent
        } else {
            Mapping::AddressAndPortDependent
        };
        Ok((translated, mapping))
    }

    /// Section 4.4.
    fn filtering(&mut self) -> Result<Filtering> {
        let socket = self.fresh()?;
        self.must(&socket, self.server)?;
        let both = Change {
            ip: true,
            port: true,
        };
        if self.may(&socket, both)?.is_some() {
            return Ok(Filtering::EndpointIndependent);
        }
        let port = Change {
            ip: false,
            port: true,
        };
        Ok(match self.may(&socket, port)? {
            Some(_) => Filtering::AddressDependent,
            None => Filtering::AddressAndPortDependent,
        })
    }

    /// Section 4.5.
    fn hairpinning(&mut self) -> Result<bool> {
        let mapped = self.fresh()?;
        let target = self.must(&mapped, self.server)?.mapped;
        let sender = self.fresh()?;
        client::reaches(&sender, &mapped, target, self.timeout.min(MAY_NOT_ANSWER))
    }

    /// A request to `to` that must be answered, its mapping recorded.
    fn must(&mut self, socket: &UdpSocket, to: SocketAddr) -> Result<Response> {
        let response = client::transaction(socket, to, Change::default(), self.timeout)?
            .ok_or_else(|| client::no_answer(to, self.timeout))?;
        self.observe(socket, to, &response)?;
        Ok(response)
    }

    /// A request to the server asking for an answer from elsewhere, which
    /// may rightly not come; its mapping recorded when it does.
    fn may(&mut self, socket: &UdpSocket, change: Change) -> Result<Option<Response>> {
        let wait = self.timeout.min(MAY_NOT_ANSWER);
        let response = client::transaction(socket, self.server, change, wait)?;
        if let Some(response) = &response {
            self.observe(socket, self.server, response)?;
        }
        Ok(response)
    }

    fn observe(
        &mut self,
        socket: &UdpSocket,
        server: SocketAddr,
        response: &Response,
    ) -> Result<()> {
        let local = local_addr(socket, server)?;
        self.observations.push(Observation {
            local,
            server,
            mapped: response.mapped,
        });
        Ok(())
    }

    /// A socket on the unspecified address of the server's family, port 0.
    fn fresh(&self) -> Result<UdpSocket> {
        let any = match self.server.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|e| {
            Error::os(
                format!("bind a UDP socket on {any} to reach {}", self.server),
                e,
            )
        })
    }
}

/// The address `socket` sends from to `to`: the source address the route
/// picks (found by connecting a throwaway socket) and the socket's port.
fn local_addr(socket: &UdpSocket, to: SocketAddr) -> Result<SocketAddr> {
    let failed = |e| Error::os(format!("find the local address of the route to {to}"), e);
    let port = socket.local_addr().map_err(failed)?.port();
    let probe = UdpSocket::bind(SocketAddr::new(
        socket.local_addr().map_err(failed)?.ip(),
        0,
    ))
    .map_err(failed)?;
    probe.connect(to).map_err(failed)?;
    Ok(SocketAddr::new(
        probe.local_addr().map_err(failed)?.ip(),
        port,
    ))
}
