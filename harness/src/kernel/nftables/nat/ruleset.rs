//! The NAT's table as one transaction: its sets, its chains, and the
//! rules of each chain in order, as the [module doc](super) shows them.

use netlink_packet_core::{NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NetlinkMessage};
use netlink_packet_netfilter::NetfilterMessage;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Expressions, Hook, HookNumber, InetHookNumber, ListAttribute,
    MetaKey, NfTablesMessage, Operator, RuleAttribute, RuleMessage, SetAttribute,
    SetElementAttribute, SetFlags, SetMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;

use super::expr::{
    self, CtKey, ORIGINAL, REPLY, STATE_NEW, STATUS_DNAT, STATUS_SNAT, ct, ct_bits, meta,
};
use super::{
    FIRST_PORT, FORWARDS, MAPPINGS, NAT_TABLE, NatRules, PEERS, PORTS, Protocol, TRANSPORTS,
    elements, ip, value,
};
use crate::common::nat::{Filtering, Mapping};
use crate::kernel::nftables::{batch, drop_verdict, ifname};

/// `nft`'s data types (`enum datatypes`), informational for the kernel,
/// and how `nft` combines them into a concatenation's type.
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |all, t| (all << 6) | t)
}
/// `NF_IP_PRI_NAT_DST`, `NF_IP_PRI_FILTER`, `NF_IP_PRI_NAT_SRC` and the
/// mapping chain's, after the source NAT.
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_FILTER: i32 = 0;
const PRIORITY_SRCNAT: i32 = 100;
const PRIORITY_MAPPING: i32 = PRIORITY_SRCNAT + 10;

fn chain(name: &str, kind: &str, hook: InetHookNumber, priority: i32) -> NfTablesMessage {
    NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(NAT_TABLE.to_owned()),
            ChainAttribute::Name(name.to_owned()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(hook)),
                Hook::Priority(priority.cast_unsigned()),
            ]),
            ChainAttribute::Type(kind.to_owned()),
        ],
    })
}

fn rule(chain: &str, expressions: Vec<Expressions>) -> NfTablesMessage {
    NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(NAT_TABLE.to_owned()),
            RuleAttribute::Chain(chain.to_owned()),
            RuleAttribute::Expressions(expressions.into_iter().map(ListAttribute::from).collect()),
        ],
    })
}

/// A set (or a map, with `data`) of `key_len` bytes.
fn set(
    name: &str,
    id: u32,
    flags: SetFlags,
    key: (u32, u32),
    data: Option<(u32, u32)>,
) -> Vec<SetAttribute> {
    let mut attributes = vec![
        SetAttribute::Table(NAT_TABLE.to_owned()),
        SetAttribute::Name(name.to_owned()),
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(key.0),
        SetAttribute::KeyLen(key.1),
        SetAttribute::Id(id),
    ];
    if let Some((kind, len)) = data {
        attributes.push(SetAttribute::DataType(kind));
        attributes.push(SetAttribute::DataLen(len));
    }
    attributes
}

/// `meta l4proto . th <sport|dport>` into registers 0 and 1: the key of
/// `mappings` and `forwards`.
fn protocol_and_port(source: bool) -> [Expressions; 2] {
    [meta(MetaKey::L4Proto, 0), expr::port(source, 1)]
}

/// `meta l4proto @transports`
fn transport() -> [Expressions; 2] {
    [meta(MetaKey::L4Proto, 0), expr::lookup(TRANSPORTS, 0, None)]
}

/// `meta l4proto . th sport != @forwards` for replies, which may come
/// from a forwarded port (nothing for the original direction).
fn not_forwarded(direction: u8) -> Vec<Expressions> {
    match direction {
        REPLY => vec![expr::lookup_missing(FORWARDS, 0)],
        _ => Vec::new(),
    }
}

/// `snat to <public> : <hash>`, the hash of the mapping's key.
fn snat(rules: &NatRules) -> Vec<Expressions> {
    let mut key = vec![
        ct(CtKey::SrcIp, Some(ORIGINAL), 8),
        ct(CtKey::ProtoSrc, Some(ORIGINAL), 9),
    ];
    if rules.nat.mapping != Mapping::EndpointIndependent {
        key.push(ct(CtKey::DstIp, Some(ORIGINAL), 10));
    }
    if rules.nat.mapping == Mapping::AddressAndPortDependent {
        key.push(ct(CtKey::ProtoDst, Some(ORIGINAL), 11));
    }
    let len = 4 * key.len() as u32;
    key.extend([
        expr::immediate(0, rules.public.octets().to_vec()),
        expr::jhash(
            8,
            len,
            1,
            rules.seed,
            u32::from(PORTS),
            u32::from(FIRST_PORT),
        ),
        expr::hton16(1),
        expr::nat(expr::Nat::Source, 0, 1),
    ]);
    key
}

/// `dnat to meta l4proto . th dport map @<map>`
fn dnat_through(map: &str) -> Vec<Expressions> {
    let mut dnat = protocol_and_port(false).to_vec();
    dnat.push(expr::lookup(map, 0, Some(0)));
    dnat.push(expr::nat(expr::Nat::Destination, 0, 1));
    dnat
}

/// The rules in order, by chain.
pub(super) fn rules_of(rules: &NatRules) -> Vec<(&'static str, Vec<Expressions>)> {
    let wan_out = || ifname(false, rules.wan_if).to_vec();
    let from_wan = || {
        [
            &ifname(true, rules.wan_if)[..],
            &expr::to_address(rules.public),
        ]
        .concat()
    };
    let from_lan = || {
        [
            &ifname(true, rules.lan_if)[..],
            &expr::to_address(rules.public),
        ]
        .concat()
    };
    let hairpin = rules.nat.hairpinning;
    let mut all = vec![(
        "postrouting",
        [
            wan_out(),
            expr::in_subnet(true, rules.lan).to_vec(),
            transport().to_vec(),
            snat(rules),
        ]
        .concat(),
    )];
    if hairpin {
        let lan_out = ifname(false, rules.lan_if).to_vec();
        let dnatted = ct_bits(CtKey::Status, STATUS_DNAT, true).to_vec();
        let from = expr::in_subnet(true, rules.lan).to_vec();
        all.push((
            "postrouting",
            [lan_out, from, dnatted, transport().to_vec(), snat(rules)].concat(),
        ));
    }
    let host = |direction| {
        vec![
            ct(CtKey::SrcIp, Some(direction), 2),
            ct(CtKey::ProtoSrc, Some(direction), 3),
        ]
    };
    for (direction, status) in [(ORIGINAL, STATUS_SNAT), (REPLY, STATUS_DNAT)] {
        let is = vec![
            ct(CtKey::Direction, None, 0),
            expr::cmp(0, Operator::Equal, vec![direction]),
        ];
        let update = [
            wan_out(),
            transport().to_vec(),
            is,
            ct_bits(CtKey::Status, status, true).to_vec(),
            protocol_and_port(true).to_vec(),
            // A port forward's replies are no mapping: they must not
            // outlive the forward.
            not_forwarded(direction),
            host(direction),
            vec![expr::update(MAPPINGS, 0, Some(2))],
        ];
        all.push(("mapping", update.concat()));
    }
    if rules.nat.filtering == Filtering::AddressDependent {
        let peer = vec![
            expr::port(true, 0),
            meta(MetaKey::L4Proto, 1),
            expr::ip_addr(false, 2),
            expr::update(PEERS, 0, None),
        ];
        all.push(("mapping", [wan_out(), transport().to_vec(), peer].concat()));
    }
    all.push((
        "prerouting",
        [from_wan(), transport().to_vec(), dnat_through(FORWARDS)].concat(),
    ));
    let admitted = match rules.nat.filtering {
        Filtering::EndpointIndependent => Some(Vec::new()),
        Filtering::AddressDependent => Some(vec![
            expr::port(false, 0),
            meta(MetaKey::L4Proto, 1),
            expr::ip_addr(true, 2),
            expr::lookup(PEERS, 0, None),
        ]),
        Filtering::AddressAndPortDependent => None,
    };
    if let Some(admitted) = admitted {
        all.push((
            "prerouting",
            [
                from_wan(),
                transport().to_vec(),
                admitted,
                dnat_through(MAPPINGS),
            ]
            .concat(),
        ));
    }
    if hairpin {
        for map in [FORWARDS, MAPPINGS] {
            all.push((
                "prerouting",
                [from_lan(), transport().to_vec(), dnat_through(map)].concat(),
            ));
        }
    }
    let new = || ct_bits(CtKey::State, STATE_NEW, true).to_vec();
    all.push((
        "input",
        [
            ifname(true, rules.wan_if).to_vec(),
            transport().to_vec(),
            new(),
            vec![drop_verdict()],
        ]
        .concat(),
    ));
    if !hairpin {
        all.push((
            "input",
            [from_lan(), transport().to_vec(), vec![drop_verdict()]].concat(),
        ));
    }
    let untranslated = ct_bits(CtKey::Status, STATUS_DNAT, false).to_vec();
    all.push((
        "forward",
        [
            ifname(true, rules.wan_if).to_vec(),
            new(),
            untranslated,
            vec![drop_verdict()],
        ]
        .concat(),
    ));
    all
}

/// The transaction that installs the NAT's table.
pub(super) fn nat_batch(rules: &NatRules) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let create = NLM_F_CREATE | NLM_F_ACK;
    let timeout = u64::try_from(rules.nat.udp_timeout.as_millis()).unwrap_or(u64::MAX);
    let dynamic = SetFlags::Timeout | SetFlags::Eval;
    let proto_port = (concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 8);
    let endpoint = (concat(&[TYPE_IPADDR, TYPE_INET_SERVICE]), 8);
    let mut mappings = set(
        MAPPINGS,
        2,
        dynamic | SetFlags::Map,
        proto_port,
        Some(endpoint),
    );
    mappings.push(SetAttribute::Timeout(timeout));
    let peer = (
        concat(&[TYPE_INET_SERVICE, TYPE_INET_PROTOCOL, TYPE_IPADDR]),
        12,
    );
    let mut peers = set(PEERS, 3, dynamic, peer, None);
    peers.push(SetAttribute::Timeout(timeout));
    let sets = [
        set(
            TRANSPORTS,
            1,
            SetFlags::empty(),
            (TYPE_INET_PROTOCOL, 1),
            None,
        ),
        mappings,
        peers,
        set(FORWARDS, 4, SetFlags::Map, proto_port, Some(endpoint)),
    ];
    let transports = [Protocol::Tcp, Protocol::Udp]
        .map(|p| vec![SetElementAttribute::Key(value(vec![p.number()]))])
        .to_vec();
    let table = NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(NAT_TABLE.to_owned())],
    });
    let mut messages = vec![
        batch(ControlMessage::BatchBegin),
        ip(table, create | NLM_F_EXCL),
    ];
    for attributes in sets {
        messages.push(ip(
            NfTablesMessage::NewSet(SetMessage { attributes }),
            create,
        ));
    }
    messages.push(ip(
        NfTablesMessage::NewSetElement(elements(TRANSPORTS, transports)),
        create,
    ));
    let chains = [
        (
            "postrouting",
            "nat",
            InetHookNumber::PostRouting,
            PRIORITY_SRCNAT,
        ),
        (
            "mapping",
            "filter",
            InetHookNumber::PostRouting,
            PRIORITY_MAPPING,
        ),
        (
            "prerouting",
            "nat",
            InetHookNumber::PreRouting,
            PRIORITY_DSTNAT,
        ),
        ("input", "filter", InetHookNumber::LocalIn, PRIORITY_FILTER),
        (
            "forward",
            "filter",
            InetHookNumber::Forward,
            PRIORITY_FILTER,
        ),
    ];
    for (name, kind, hook, priority) in chains {
        messages.push(ip(chain(name, kind, hook, priority), create));
    }
    for (name, expressions) in rules_of(rules) {
        messages.push(ip(rule(name, expressions), create | NLM_F_APPEND));
    }
    messages.push(batch(ControlMessage::BatchEnd));
    messages
}
