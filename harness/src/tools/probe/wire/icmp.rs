//! ICMP and ICMPv6 for probes: the echo requests they send, and what the
//! messages that come back say about them. One code path for both
//! families (an echo has the same layout in both); [`Family`] holds what
//! differs.

use std::net::IpAddr;

use pnet::packet::ip::IpNextHeaderProtocols;

use super::family::{Family, icmp_checksum};
use crate::tools::probe::{Reason, Token};

/// An echo request's length: its header, then a [`Token`].
pub(in crate::tools::probe) const ECHO_LEN: usize = 8 + Token::LEN;

/// Builds in `buf` the echo request `id`, `seq` from `src` to `dst` (whose
/// family says ICMP or ICMPv6), with `token` as payload and its checksum.
/// (For ICMPv6 the kernel computes the checksum again when it sends,
/// RFC 3542 §3.1; the packet is whole either way.)
///
/// # References
/// RFC 792 (echo), RFC 4443 §4.1 (ICMPv6 echo request).
pub(in crate::tools::probe) fn echo_request<'b>(
    buf: &'b mut [u8; ECHO_LEN],
    (src, dst): (IpAddr, IpAddr),
    id: u16,
    seq: u16,
    token: &Token,
) -> &'b [u8] {
    buf[0] = Family::of(dst).echo_request();
    buf[1] = 0;
    buf[2..4].fill(0);
    buf[4..6].copy_from_slice(&id.to_be_bytes());
    buf[6..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..].copy_from_slice(token.as_bytes());
    let checksum = icmp_checksum(&buf[..], src, dst);
    buf[2..4].copy_from_slice(&checksum.to_be_bytes());
    &buf[..]
}

/// What an ICMP message says about a probe's echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::tools::probe) enum IcmpAnswer {
    /// The reply to the echo with this sequence number.
    Reply(u16),
    /// An error about one of them.
    Error(Reason),
}

/// The big-endian 16-bit word at `at` of `bytes`.
fn word(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// What the ICMP (or ICMPv6, by the family of `dst`) `message` from `from`
/// says about our echoes `id` to `dst`: a reply from `dst` with our
/// identifier, or an error quoting one of our echoes; `None` otherwise.
pub(in crate::tools::probe) fn classify_icmp(
    message: &[u8],
    from: IpAddr,
    dst: IpAddr,
    id: u16,
) -> Option<IcmpAnswer> {
    let family = Family::of(dst);
    let (kind, code) = (*message.first()?, *message.get(1)?);
    if kind == family.echo_reply() {
        let ours = from == dst && word(message, 4)? == id;
        return ours.then_some(IcmpAnswer::Reply(word(message, 6)?));
    }
    let reason = family.reason(kind, code)?;
    let quoted = family.quoted(message)?;
    let ours = quoted.dst == dst
        && quoted.protocol == family.icmp()
        && quoted.transport.first() == Some(&family.echo_request())
        && word(quoted.transport, 4)? == id;
    ours.then_some(IcmpAnswer::Error(reason))
}

/// Why our SYN from port `sport` to `dst:dport` did not get through, if the
/// ICMP (or ICMPv6) `message` is an error quoting it.
pub(in crate::tools::probe) fn icmp_error_about_tcp(
    message: &[u8],
    dst: IpAddr,
    dport: u16,
    sport: u16,
) -> Option<Reason> {
    let family = Family::of(dst);
    let reason = family.reason(*message.first()?, *message.get(1)?)?;
    let quoted = family.quoted(message)?;
    let ours = quoted.dst == dst
        && quoted.protocol == IpNextHeaderProtocols::Tcp
        && (word(quoted.transport, 0)?, word(quoted.transport, 2)?) == (sport, dport);
    ours.then_some(reason)
}
