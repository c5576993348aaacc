//! Faults as nf_tables tables of their own, one per fault, each owned by
//! the netlink socket that made it (`NFT_TABLE_F_OWNER`): the kernel
//! deletes it when that socket closes, so a fault never outlives its
//! guard, nor the process, however it ends. Each rule counts what it
//! matched and what it dropped; the chain's name says what it does.

use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, DevHookNumber, Expressions, Hook,
    HookNumber, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableFlags, TableMessage,
    Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;

use super::{EXPR_COUNTER, Refusal, Socket, bare, batch, counters, nft_of};
use crate::common::error::{Error, Result};

/// One expression of a rule.
pub(crate) type Expression = Expressions;

/// Where a fault's table starts its name.
pub(crate) const FAULT_TABLE: &str = "netns_harness_fault";
/// `NF_DROP`
const NF_DROP: u32 = 0;
/// `NFT_PAYLOAD_LL_HEADER` and `NFT_PAYLOAD_TRANSPORT_HEADER`.
const LL_HEADER: u32 = 0;
const TRANSPORT_HEADER: u32 = 2;
/// The `numgen` expression's attributes (`enum nft_ng_attributes`) and
/// its incrementing kind (`NFT_NG_INCREMENTAL`).
const EXPR_NUMGEN: &str = "numgen";
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFT_NG_INCREMENTAL: u32 = 0;
/// The `fwd` expression and its attribute naming the register that holds
/// the interface (`NFTA_FWD_SREG_DEV`).
const EXPR_FWD: &str = "fwd";
const NFTA_FWD_SREG_DEV: u16 = 1;

/// Where a fault's chain hooks.
#[derive(Clone, Debug)]
pub(crate) enum FaultHook {
    /// The bridge's forward hook (`table bridge`).
    BridgeForward,
    /// The forward hook of both IP families (`table inet`).
    Forward,
    /// A device's ingress or egress (`table netdev`).
    Device { name: String, egress: bool },
}

impl FaultHook {
    fn family(&self) -> NetfilterProtoFamily {
        match self {
            FaultHook::BridgeForward => NetfilterProtoFamily::Bridge,
            FaultHook::Forward => NetfilterProtoFamily::Inet,
            FaultHook::Device { .. } => NetfilterProtoFamily::NetDev,
        }
    }

    fn attributes(&self) -> Vec<Hook> {
        match self {
            FaultHook::BridgeForward | FaultHook::Forward => vec![
                Hook::Number(HookNumber::Inet(InetHookNumber::Forward)),
                Hook::Priority(0),
            ],
            FaultHook::Device { name, egress } => vec![
                Hook::Number(HookNumber::Dev(if *egress {
                    DevHookNumber::Egress
                } else {
                    DevHookNumber::Ingress
                })),
                Hook::Priority(0),
                Hook::NetDeviceName(name.clone()),
            ],
        }
    }
}

/// The expressions that compare register 1, loaded by `load`, with `value`.
fn compare(load: Expressions, value: Vec<u8>) -> [Expressions; 2] {
    [
        load,
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(value)),
        ]),
    ]
}

fn payload(base: u32, offset: u32, len: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

fn meta(key: MetaKey) -> Expressions {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
}

/// `ether saddr == mac` (`source`) or `ether daddr == mac`.
pub(crate) fn ether(source: bool, mac: [u8; 6]) -> [Expressions; 2] {
    compare(
        payload(LL_HEADER, if source { 6 } else { 0 }, 6),
        mac.to_vec(),
    )
}

/// `meta iifname == name` (`input`) or `meta oifname == name`.
pub(crate) fn ifname(input: bool, name: &str) -> [Expressions; 2] {
    let mut padded = vec![0u8; libc::IFNAMSIZ];
    for (dst, src) in padded.iter_mut().zip(name.as_bytes()) {
        *dst = *src;
    }
    let key = if input {
        MetaKey::Iifname
    } else {
        MetaKey::Oifname
    };
    compare(meta(key), padded)
}

/// `meta l4proto == protocol`: IPv4 or IPv6 packets of that transport
/// protocol (a netdev hook sets it for both families, and for nothing
/// else).
pub(crate) fn l4_protocol(protocol: u8) -> [Expressions; 2] {
    compare(meta(MetaKey::L4Proto), vec![protocol])
}

/// The transport header's 16 bits at `offset` equal `value` (a port).
pub(crate) fn transport_u16(offset: u32, value: u16) -> [Expressions; 2] {
    compare(
        payload(TRANSPORT_HEADER, offset, 2),
        value.to_be_bytes().to_vec(),
    )
}

/// TCP's flags byte, masked by `mask`, equals `value`.
pub(crate) fn tcp_flags(mask: u8, value: u8) -> [Expressions; 3] {
    [
        payload(TRANSPORT_HEADER, 13, 1),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(1),
            Bitwise::Mask(DataAttribute::Value(vec![mask])),
            Bitwise::Xor(DataAttribute::Value(vec![0])),
        ]),
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(vec![value])),
        ]),
    ]
}

/// `numgen inc mod <modulus> == <value>`: true for the packets, among
/// those that got this far, whose count modulo `modulus` is `value`.
pub(crate) fn numgen_is(modulus: u32, value: u32) -> [Expressions; 2] {
    let attribute = |kind, v: u32| DefaultNla::new(kind, v.to_be_bytes().to_vec());
    compare(
        Expressions::Other {
            expression_type: EXPR_NUMGEN.to_owned(),
            attributes: vec![
                attribute(NFTA_NG_DREG, u32::from(Register::Reg1)),
                attribute(NFTA_NG_MODULUS, modulus),
                attribute(NFTA_NG_TYPE, NFT_NG_INCREMENTAL),
            ],
        },
        // A register holds numgen's result in host order.
        value.to_ne_bytes().to_vec(),
    )
}

/// `meta mark != mark`
pub(crate) fn mark_is_not(mark: u32) -> [Expressions; 2] {
    let [load, _] = compare(meta(MetaKey::Mark), Vec::new());
    [
        load,
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::NotEqual),
            // A register holds the mark in host order.
            Cmp::Data(DataAttribute::Value(mark.to_ne_bytes().to_vec())),
        ]),
    ]
}

/// `fwd to <index>`: the packet leaves by interface `index` instead.
pub(crate) fn forward_to(index: u32) -> [Expressions; 2] {
    [
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Reg1),
            Immediate::Data(DataAttribute::Value(index.to_ne_bytes().to_vec())),
        ]),
        Expressions::Other {
            expression_type: EXPR_FWD.to_owned(),
            attributes: vec![DefaultNla::new(
                NFTA_FWD_SREG_DEV,
                u32::from(Register::Reg1).to_be_bytes().to_vec(),
            )],
        },
    ]
}

/// `counter`: counts what reaches it.
pub(crate) fn count() -> Expressions {
    bare(EXPR_COUNTER)
}

/// `drop`
pub(crate) fn drop_verdict() -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(NF_DROP),
        )])),
    ])
}

/// A fault installed in one namespace: its table lives as long as the
/// socket that made it.
pub(crate) struct FaultTable {
    socket: Socket,
    family: NetfilterProtoFamily,
    table: String,
    namespace: &'static str,
}

static NEXT_TABLE: AtomicU32 = AtomicU32::new(0);

impl FaultTable {
    /// Installs, on `socket` (which the fault keeps), a table of its own
    /// with one chain named `what` at `hook` and one rule per list of
    /// `rules`, in one transaction.
    pub(crate) fn install(
        mut socket: Socket,
        namespace: &'static str,
        hook: &FaultHook,
        what: &str,
        rules: Vec<Vec<Expressions>>,
    ) -> Result<FaultTable> {
        let family = hook.family();
        // Unique in the namespace, which processes of other PID
        // namespaces (other tests' bodies) share.
        let unique = {
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(NEXT_TABLE.fetch_add(1, Ordering::Relaxed));
            hasher.finish()
        };
        let table = format!("{FAULT_TABLE}_{unique:016x}");
        let mut messages = vec![
            batch(ControlMessage::BatchBegin),
            nft_of(
                family,
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![
                        TableAttribute::Name(table.clone()),
                        TableAttribute::Flags(TableFlags::Owner),
                    ],
                }),
                NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            ),
            nft_of(
                family,
                NfTablesMessage::NewChain(ChainMessage {
                    attributes: vec![
                        ChainAttribute::Table(table.clone()),
                        ChainAttribute::Name(what.to_owned()),
                        ChainAttribute::Hook(hook.attributes()),
                        ChainAttribute::Type("filter".to_owned()),
                    ],
                }),
                NLM_F_CREATE | NLM_F_ACK,
            ),
        ];
        for rule in rules {
            messages.push(nft_of(
                family,
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table.clone()),
                        RuleAttribute::Chain(what.to_owned()),
                        RuleAttribute::Expressions(
                            rule.into_iter().map(ListAttribute::from).collect(),
                        ),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            ));
        }
        messages.push(batch(ControlMessage::BatchEnd));
        socket
            .transact(&mut messages)
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: format!("install the fault \"{what}\" (table {table})"),
                namespace,
                source: error,
                kernel_message: message,
            })?;
        Ok(FaultTable {
            socket,
            family,
            table,
            namespace,
        })
    }

    /// What its rules counted: per rule, the packets each of its counters
    /// saw, in order.
    pub(crate) fn counters(&mut self) -> Result<Vec<Vec<u64>>> {
        let query = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(self.table.clone())],
        });
        let rules = self
            .socket
            .dump(nft_of(self.family, query, NLM_F_DUMP))
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: format!("list the rules of table {}", self.table),
                namespace: self.namespace,
                source: error,
                kernel_message: message,
            })?;
        Ok(rules.iter().map(packets).collect())
    }
}

/// The packets each counter of `rule` saw.
fn packets(rule: &netlink_packet_netfilter::NetfilterMessage) -> Vec<u64> {
    counters(rule)
        .into_iter()
        .map(|(packets, _)| packets)
        .collect()
}
