//! nf_tables over netlink: the lab's masquerade rule, built as the
//! expression list `nft --debug=netlink` shows for
//! `ip saddr <subnet> oifname "<uplink>" counter masquerade`.

use netlink_packet_core::DefaultNla;
use netlink_packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NetlinkMessage, Nla,
    parse_u64_be,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, HookNumber, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use crate::common::error::{Error, Result};
use crate::common::subnet::{Ipv4Subnet, Ipv6Subnet};
use crate::kernel::netlink::{Refusal, Socket, request};

/// `NFNL_SUBSYS_NFTABLES`: the subsystem a batch of nf_tables messages is
/// for (its resource id).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNETLINK_V0`
const NFNETLINK_V0: u8 = 0;

/// `NF_ACCEPT`: the chain's policy.
const NF_ACCEPT: u32 = 1;
/// `NF_IP_PRI_NAT_SRC`: the priority `srcnat`.
const NF_IP_PRI_NAT_SRC: u32 = 100;
/// `NFT_PAYLOAD_NETWORK_HEADER` of `enum nft_payload_bases`.
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// Where `saddr` is in an IPv4 header, and in an IPv6 header.
const IPV4_SADDR_OFFSET: u32 = 12;
const IPV6_SADDR_OFFSET: u32 = 8;

/// Whose traffic a masquerade rewrites: a subnet of either family.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sources {
    V4(Ipv4Subnet),
    V6(Ipv6Subnet),
}

impl Sources {
    /// The table's family, and its name in `nft`'s syntax.
    fn family(self) -> (NetfilterProtoFamily, &'static str) {
        match self {
            Sources::V4(_) => (NetfilterProtoFamily::IPv4, "ip"),
            Sources::V6(_) => (NetfilterProtoFamily::IPv6, "ip6"),
        }
    }

    /// Where the source address is in the network header.
    fn offset(self) -> u32 {
        match self {
            Sources::V4(_) => IPV4_SADDR_OFFSET,
            Sources::V6(_) => IPV6_SADDR_OFFSET,
        }
    }

    /// The network's address and its mask, as the header has them.
    fn network_and_mask(self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Sources::V4(subnet) => (
                subnet.network().octets().to_vec(),
                subnet.netmask().octets().to_vec(),
            ),
            Sources::V6(subnet) => (
                subnet.network().octets().to_vec(),
                subnet.mask().to_be_bytes().to_vec(),
            ),
        }
    }
}

impl std::fmt::Display for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sources::V4(subnet) => write!(f, "ip saddr {subnet}"),
            Sources::V6(subnet) => write!(f, "ip6 saddr {subnet}"),
        }
    }
}

/// The expressions `netlink-packet-netfilter` has no type for: their names
/// (`counter`, `masq`) and the counter's attributes (`enum
/// nft_counter_attributes`).
const EXPR_COUNTER: &str = "counter";
const EXPR_MASQ: &str = "masq";
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

/// The table that holds the lab's NAT, in the lab namespace.
pub(crate) const TABLE: &str = "netns_harness";
/// Its chain hooked at postrouting.
pub(crate) const CHAIN: &str = "postrouting";

/// An nf_tables message of `family`.
fn nft_of(
    family: NetfilterProtoFamily,
    message: NfTablesMessage,
    flags: u16,
) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(family, NFNETLINK_V0, 0);
    request(NetfilterMessage::new(header, message), flags)
}

/// A batch delimiter (`NFNL_MSG_BATCH_BEGIN`, `NFNL_MSG_BATCH_END`):
/// nf_tables changes are made in transactions.
fn batch(message: ControlMessage) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(
        NetfilterProtoFamily::Unspec,
        NFNETLINK_V0,
        NFNL_SUBSYS_NFTABLES,
    );
    request(NetfilterMessage::new(header, message), 0)
}

/// An expression `netlink-packet-netfilter` has no type for, without
/// attributes.
fn bare(name: &str) -> Expressions {
    Expressions::Other {
        expression_type: name.to_owned(),
        attributes: Vec::new(),
    }
}

/// The messages of the transaction that installs
/// `table ip netns_harness { chain postrouting { type nat hook postrouting priority srcnat; policy accept;
///  ip saddr <subnet> oifname "<uplink>" counter masquerade } }`, or its
/// `ip6` twin.
fn masquerade_batch(sources: Sources, uplink: &str) -> Vec<NetlinkMessage<NetfilterMessage>> {
    let (family, _) = sources.family();
    let (network, mask) = sources.network_and_mask();
    let len = u32::try_from(network.len()).unwrap_or(u32::MAX);
    let mut ifname = vec![0u8; libc::IFNAMSIZ];
    for (dst, src) in ifname.iter_mut().zip(uplink.as_bytes()) {
        *dst = *src;
    }
    let table = NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.to_owned())],
    });
    let chain = NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(TABLE.to_owned()),
            ChainAttribute::Name(CHAIN.to_owned()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(InetHookNumber::PostRouting)),
                Hook::Priority(NF_IP_PRI_NAT_SRC),
            ]),
            ChainAttribute::Policy(NF_ACCEPT),
            ChainAttribute::Type("nat".to_owned()),
        ],
    });
    let expressions = [
        // saddr & mask == network
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(NFT_PAYLOAD_NETWORK_HEADER),
            Payload::Offset(sources.offset()),
            Payload::Len(len),
        ]),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(len),
            Bitwise::Mask(DataAttribute::Value(mask)),
            Bitwise::Xor(DataAttribute::Value(vec![0; network.len()])),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(network)),
        ]),
        // oifname == uplink
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(MetaKey::Oifname),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(ifname)),
        ]),
        bare(EXPR_COUNTER),
        bare(EXPR_MASQ),
    ];
    let rule = NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.to_owned()),
            RuleAttribute::Chain(CHAIN.to_owned()),
            RuleAttribute::Expressions(expressions.into_iter().map(ListAttribute::from).collect()),
        ],
    });
    vec![
        batch(ControlMessage::BatchBegin),
        nft_of(family, table, NLM_F_CREATE | NLM_F_ACK),
        nft_of(family, chain, NLM_F_CREATE | NLM_F_ACK),
        nft_of(family, rule, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK),
        batch(ControlMessage::BatchEnd),
    ]
}

/// Installs, in one transaction,
/// `table ip netns_harness { chain postrouting { type nat hook postrouting priority srcnat; policy accept;
///  ip saddr <subnet> oifname "<uplink>" counter masquerade } }`, or its
/// `ip6` twin for an IPv6 subnet.
pub(crate) fn install_masquerade(
    socket: &mut Socket,
    sources: Sources,
    uplink: &str,
) -> Result<()> {
    let (_, family) = sources.family();
    socket
        .transact(&mut masquerade_batch(sources, uplink))
        .map(drop)
        .map_err(|Refusal { error, message }| Error::Netlink {
            operation: format!(
                "add nftables rule \"{sources} oifname {uplink} masquerade\" (table {family} {TABLE})"
            ),
            namespace: "lab",
            source: error,
            kernel_message: message,
        })
}

/// The packets and bytes the lab's masquerade rule of `sources` has
/// counted (`nft list chain ip netns_harness postrouting`, or `ip6`).
pub(crate) fn masquerade_counter(socket: &mut Socket, sources: Sources) -> Result<(u64, u64)> {
    let (family, name) = sources.family();
    let query = NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.to_owned()),
            RuleAttribute::Chain(CHAIN.to_owned()),
        ],
    });
    let rules =
        socket
            .dump(nft_of(family, query, NLM_F_DUMP))
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: format!("list the rules of table {name} {TABLE}"),
                namespace: "lab",
                source: error,
                kernel_message: message,
            })?;
    Ok(rules
        .iter()
        .flat_map(counters)
        .fold((0, 0), |(p, b), (packets, bytes)| (p + packets, b + bytes)))
}

/// The (packets, bytes) of each counter expression of `rule`.
fn counters(rule: &NetfilterMessage) -> Vec<(u64, u64)> {
    let NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)) = &rule.inner else {
        return Vec::new();
    };
    rule.attributes
        .iter()
        .filter_map(|a| match a {
            RuleAttribute::Expressions(list) => Some(list),
            _ => None,
        })
        .flatten()
        .filter_map(|element| match element {
            ListAttribute::Element(attributes) => Some(attributes),
            _ => None,
        })
        .flatten()
        .filter_map(|attribute| match attribute {
            ExpressionAttribute::Data(Expressions::Other {
                expression_type,
                attributes,
            }) if expression_type == EXPR_COUNTER => Some(counter(attributes)),
            _ => None,
        })
        .collect()
}

/// The (packets, bytes) of a counter expression's attributes.
fn counter(attributes: &[DefaultNla]) -> (u64, u64) {
    let mut counted = (0, 0);
    for attribute in attributes {
        let mut value = vec![0; attribute.value_len()];
        attribute.emit_value(&mut value);
        let value = parse_u64_be(&value).unwrap_or(0);
        match attribute.kind() & NLA_TYPE_MASK {
            NFTA_COUNTER_PACKETS => counted.0 += value,
            NFTA_COUNTER_BYTES => counted.1 += value,
            _ => {}
        }
    }
    counted
}

mod faults;
pub(crate) use faults::*;
mod nat;
pub(crate) use nat::{NatRules, add_forward, flush_nat, install_nat, remove_forward};

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload};

    use super::*;
    use crate::kernel::netlink::bytes_of;

    /// `message` as the kernel receives it, parsed back by
    /// `netlink-packet-netfilter`: its flags and its payload.
    fn parsed(message: NetlinkMessage<NetfilterMessage>) -> (u16, NetfilterMessage) {
        let bytes = bytes_of(message);
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
        assert_eq!(message.header.length as usize, bytes.len());
        match message.payload {
            NetlinkPayload::InnerMessage(inner) => (message.header.flags, inner),
            other => panic!("not a netfilter message: {other:?}"),
        }
    }

    /// The names of a rule's expressions, in order, and the data of its
    /// comparisons.
    fn expressions(rule: &RuleMessage) -> (Vec<String>, Vec<Vec<u8>>) {
        let (mut names, mut compared) = (Vec::new(), Vec::new());
        let elements = rule
            .attributes
            .iter()
            .filter_map(|a| match a {
                RuleAttribute::Expressions(list) => Some(list),
                _ => None,
            })
            .flatten();
        for element in elements {
            let ListAttribute::Element(attributes) = element else {
                panic!("not an expression: {element:?}");
            };
            for attribute in attributes {
                match attribute {
                    ExpressionAttribute::Name(name) => names.push(name.clone()),
                    ExpressionAttribute::Data(Expressions::Cmp(cmp)) => {
                        compared.extend(cmp.iter().filter_map(|c| match c {
                            Cmp::Data(DataAttribute::Value(v)) => Some(v.clone()),
                            _ => None,
                        }));
                    }
                    _ => {}
                }
            }
        }
        (names, compared)
    }

    #[test]
    fn the_masquerade_batch_is_read_back_as_one_transaction() {
        let subnet: Ipv4Subnet = "10.200.0.0/16".parse().unwrap();
        let batch: Vec<_> = masquerade_batch(Sources::V4(subnet), "uplink")
            .into_iter()
            .map(parsed)
            .collect();
        assert_eq!(batch.len(), 5);
        let kinds: Vec<_> = batch.iter().map(|(_, m)| &m.inner).collect();
        assert_eq!(kinds[0], &ControlMessage::BatchBegin.into());
        assert_eq!(kinds[4], &ControlMessage::BatchEnd.into());
        assert_eq!(batch[0].1.header.res_id, NFNL_SUBSYS_NFTABLES);
        // Only the changes ask for an ack; the delimiters carry none.
        let flags: Vec<u16> = batch.iter().map(|(f, _)| *f).collect();
        let change = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
        assert_eq!(
            flags,
            [
                NLM_F_REQUEST,
                change,
                change,
                change | NLM_F_APPEND,
                NLM_F_REQUEST
            ]
        );
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewChain(chain)) = kinds[2] else {
            panic!("not a chain: {:?}", kinds[2]);
        };
        assert!(chain.attributes.contains(&ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Inet(InetHookNumber::PostRouting)),
            Hook::Priority(NF_IP_PRI_NAT_SRC),
        ])));
        assert!(
            chain
                .attributes
                .contains(&ChainAttribute::Type("nat".into()))
        );
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)) = kinds[3] else {
            panic!("not a rule: {:?}", kinds[3]);
        };
        let (names, compared) = expressions(rule);
        assert_eq!(
            names,
            [
                "payload", "bitwise", "cmp", "meta", "cmp", "counter", "masq"
            ]
        );
        let mut ifname = b"uplink".to_vec();
        ifname.resize(libc::IFNAMSIZ, 0);
        assert_eq!(compared, [vec![10, 200, 0, 0], ifname]);
    }

    #[test]
    fn an_ipv6_masquerade_compares_the_ipv6_source() {
        let subnet: Ipv6Subnet = "fd00:200::/64".parse().unwrap();
        let batch: Vec<_> = masquerade_batch(Sources::V6(subnet), "uplink")
            .into_iter()
            .map(parsed)
            .collect();
        assert!(
            batch[1..4]
                .iter()
                .all(|(_, m)| m.header.family == NetfilterProtoFamily::IPv6)
        );
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)) = &batch[3].1.inner
        else {
            panic!("not a rule: {:?}", batch[3].1);
        };
        let (_, compared) = expressions(rule);
        assert_eq!(compared[0], subnet.network().octets());
    }

    #[test]
    fn a_rules_counter_is_read_back() {
        let counter = Expressions::Other {
            expression_type: EXPR_COUNTER.to_owned(),
            attributes: vec![
                DefaultNla::new(NFTA_COUNTER_BYTES, 840u64.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_COUNTER_PACKETS, 10u64.to_be_bytes().to_vec()),
            ],
        };
        let rule = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.to_owned()),
                RuleAttribute::Expressions(vec![bare(EXPR_MASQ).into(), counter.into()]),
            ],
        });
        let (_, rule) = parsed(nft_of(NetfilterProtoFamily::IPv4, rule, 0));
        assert_eq!(counters(&rule), [(10, 840)]);
    }
}
