//! STUN (RFC 5389) for labs: a responder for NAT behaviour discovery
//! (RFC 5780), a Binding client, and the classifier that tells how the
//! NAT between a test and the responder maps, filters and hairpins, in
//! the words of RFC 4787 ([`Mapping`](crate::Mapping),
//! [`Filtering`](crate::Filtering)).
//!
//! A [`Responder`] answers on two addresses and two ports of a lab host
//! (e.g. the outside host), from the socket each request asks for;
//! [`classify`] runs RFC 5780's tests against it from the test's own
//! namespace and returns a [`Behaviour`], with every mapping it saw
//! ([`Observation`]) to compare with the router's conntrack table;
//! [`binding`] asks for one socket's mapped address.
//!
//! Start a responder from a thread in a lab host's namespace; its sockets
//! stay there:
//!
//! ```no_run
//! use netns_harness::stun::Responder;
//!
//! let responder = Responder::start("203.0.113.1".parse()?, "203.0.113.2".parse()?, [3478, 3479])?;
//! let server = responder.addrs()[0];
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Then classify from a test body, behind the lab's NAT:
//!
//! ```no_run
//! use std::time::Duration;
//! use netns_harness::{Filtering, Mapping, stun};
//!
//! let behaviour = stun::classify("203.0.113.1:3478".parse()?, Duration::from_secs(2))?;
//! assert!(behaviour.translated, "{behaviour}");
//! assert_eq!(behaviour.mapping, Mapping::EndpointIndependent);
//! assert_eq!(behaviour.filtering, Filtering::AddressAndPortDependent);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The wire format lives in `message` (requests, success responses and
//! the attributes of both RFCs; malformed datagrams are dropped), the
//! transactions in `client`, the tests of RFC 5780 in `classify`.

mod classify;
mod client;
mod message;
mod responder;

pub use classify::{Behaviour, Observation, classify};
pub use client::binding;
pub use responder::Responder;

#[cfg(test)]
mod tests;
