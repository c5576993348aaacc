//! The expressions of the NAT's rules, each as `nft --debug=netlink`
//! shows it, on 32-bit registers (`NFT_REG32_00` … `NFT_REG32_15`) so
//! that concatenations line up: a load of fewer than 4 bytes zero-pads
//! its register, and the next field of a concatenation starts in the next
//! register. `netlink-packet-netfilter` has no type for `ct`, `hash`,
//! `byteorder`, `nat` and `dynset`: those are lists of attributes, named
//! by their `enum nft_*_attributes` of `linux/netfilter/nf_tables.h`.

use std::net::Ipv4Addr;

use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, Expressions, Immediate, Lookup, Meta, MetaKey, Operator, Payload,
    Register,
};

use crate::common::subnet::Ipv4Subnet;

/// `NFT_PAYLOAD_NETWORK_HEADER` and `NFT_PAYLOAD_TRANSPORT_HEADER`.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;

/// `enum nft_ct_keys`, and `enum nft_ct_attributes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum CtKey {
    State = 0,
    Direction = 1,
    Status = 2,
    ProtoSrc = 11,
    ProtoDst = 12,
    SrcIp = 19,
    DstIp = 20,
}
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;

/// `enum ip_conntrack_dir`: a connection's direction.
pub(super) const ORIGINAL: u8 = 0;
pub(super) const REPLY: u8 = 1;
/// `ct state new`: `NF_CT_STATE_BIT(IP_CT_NEW)`.
pub(super) const STATE_NEW: u32 = 1 << 3;
/// `enum ip_conntrack_status`: `IPS_SRC_NAT`, `IPS_DST_NAT`.
pub(super) const STATUS_SNAT: u32 = 1 << 4;
pub(super) const STATUS_DNAT: u32 = 1 << 5;

/// `enum nft_hash_attributes`, `NFT_HASH_JENKINS`.
const NFTA_HASH_SREG: u16 = 1;
const NFTA_HASH_DREG: u16 = 2;
const NFTA_HASH_LEN: u16 = 3;
const NFTA_HASH_MODULUS: u16 = 4;
const NFTA_HASH_SEED: u16 = 5;
const NFTA_HASH_OFFSET: u16 = 6;
const NFTA_HASH_TYPE: u16 = 7;
const NFT_HASH_JENKINS: u32 = 0;

/// `enum nft_byteorder_attributes`, `NFT_BYTEORDER_HTON`.
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFT_BYTEORDER_HTON: u32 = 1;

/// `enum nft_nat_attributes`, `enum nft_nat_types`, and
/// `NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED`.
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NF_NAT_RANGE_MAP_IPS_PROTO_SPECIFIED: u32 = 0b11;
/// `NFPROTO_IPV4`
const NFPROTO_IPV4: u32 = 2;

/// `enum nft_lookup_flags`: `NFT_LOOKUP_F_INV`.
const NFT_LOOKUP_F_INV: u32 = 1;

/// `enum nft_dynset_attributes`, `NFT_DYNSET_OP_UPDATE`.
const NFTA_DYNSET_SET_NAME: u16 = 1;
const NFTA_DYNSET_OP: u16 = 3;
const NFTA_DYNSET_SREG_KEY: u16 = 4;
const NFTA_DYNSET_SREG_DATA: u16 = 5;
const NFT_DYNSET_OP_UPDATE: u32 = 1;

/// Which way a NAT rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Nat {
    /// `snat` (`NFT_NAT_SNAT`)
    Source = 0,
    /// `dnat` (`NFT_NAT_DNAT`)
    Destination = 1,
}

/// 32-bit register `n` (`NFT_REG32_00 + n`).
pub(super) fn reg(n: u32) -> Register {
    Register::Other(8 + n)
}

/// A big-endian `u32` attribute, as the kernel reads every number here.
fn number(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

fn register(kind: u16, register: Register) -> DefaultNla {
    number(kind, u32::from(register))
}

fn other(name: &str, attributes: Vec<DefaultNla>) -> Expressions {
    Expressions::Other {
        expression_type: name.to_owned(),
        attributes,
    }
}

/// `meta <key> => reg <to>`
pub(super) fn meta(key: MetaKey, to: u32) -> Expressions {
    Expressions::Meta(vec![Meta::DestinationRegister(reg(to)), Meta::Key(key)])
}

fn payload(base: u32, offset: u32, len: u32, to: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(reg(to)),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

/// `ip saddr => reg <to>` (`source`) or `ip daddr`.
pub(super) fn ip_addr(source: bool, to: u32) -> Expressions {
    payload(NETWORK_HEADER, if source { 12 } else { 16 }, 4, to)
}

/// `th sport => reg <to>` (`source`) or `th dport`: the transport
/// header's ports, the same two bytes for TCP and UDP.
pub(super) fn port(source: bool, to: u32) -> Expressions {
    payload(TRANSPORT_HEADER, if source { 0 } else { 2 }, 2, to)
}

/// `ct [original|reply] <key> => reg <to>`
pub(super) fn ct(key: CtKey, direction: Option<u8>, to: u32) -> Expressions {
    let mut attributes = vec![
        register(NFTA_CT_DREG, reg(to)),
        number(NFTA_CT_KEY, key as u32),
    ];
    if let Some(direction) = direction {
        attributes.push(DefaultNla::new(NFTA_CT_DIRECTION, vec![direction]));
    }
    other("ct", attributes)
}

/// `cmp <op> reg <at> <value>`
pub(super) fn cmp(at: u32, op: Operator, value: Vec<u8>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(reg(at)),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(value)),
    ])
}

/// `reg <at> = reg <at> & mask` on a host-order `u32` (conntrack's state
/// and status bits).
pub(super) fn mask(at: u32, mask: u32) -> Expressions {
    Expressions::Bitwise(vec![
        Bitwise::SourceRegister(reg(at)),
        Bitwise::DestinationRegister(reg(at)),
        Bitwise::Length(4),
        Bitwise::Mask(DataAttribute::Value(mask.to_ne_bytes().to_vec())),
        Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
    ])
}

/// `ct <key> & bits != 0` (`set`) or `== 0`, for `ct state` and `ct
/// status`, which registers hold in host order.
pub(super) fn ct_bits(key: CtKey, bits: u32, set: bool) -> [Expressions; 3] {
    let op = if set {
        Operator::NotEqual
    } else {
        Operator::Equal
    };
    [ct(key, None, 0), mask(0, bits), cmp(0, op, vec![0; 4])]
}

/// `ip saddr <subnet>` (`source`) or `ip daddr`.
pub(super) fn in_subnet(source: bool, subnet: Ipv4Subnet) -> [Expressions; 3] {
    [
        ip_addr(source, 0),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(reg(0)),
            Bitwise::DestinationRegister(reg(0)),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(subnet.netmask().octets().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ]),
        cmp(0, Operator::Equal, subnet.network().octets().to_vec()),
    ]
}

/// `ip daddr <addr>`
pub(super) fn to_address(addr: Ipv4Addr) -> [Expressions; 2] {
    [
        ip_addr(false, 0),
        cmp(0, Operator::Equal, addr.octets().to_vec()),
    ]
}

/// `immediate reg <to> <value>`
pub(super) fn immediate(to: u32, value: Vec<u8>) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(reg(to)),
        Immediate::Data(DataAttribute::Value(value)),
    ])
}

/// `lookup reg <key> set <set> [dreg <to>]`: the rule goes on only if
/// the key is in the set; a map's data lands in `to`.
pub(super) fn lookup(set: &str, key: u32, to: Option<u32>) -> Expressions {
    let mut attributes = vec![
        Lookup::Set(set.to_owned()),
        Lookup::SourceRegister(reg(key)),
    ];
    attributes.extend(to.map(|to| Lookup::DestinationRegister(reg(to))));
    Expressions::Lookup(attributes)
}

/// `lookup reg <key> set <set> 0x1`: the rule goes on only if the key
/// is not in the set (`NFT_LOOKUP_F_INV`).
pub(super) fn lookup_missing(set: &str, key: u32) -> Expressions {
    Expressions::Lookup(vec![
        Lookup::Set(set.to_owned()),
        Lookup::SourceRegister(reg(key)),
        Lookup::Flags(NFT_LOOKUP_F_INV),
    ])
}

/// `dynset update reg_key <key> set <set> [sreg_data <data>]`: adds the
/// element, or restarts its timeout if it is there (its data stays).
pub(super) fn update(set: &str, key: u32, data: Option<u32>) -> Expressions {
    let mut name = set.as_bytes().to_vec();
    name.push(0);
    let mut attributes = vec![
        DefaultNla::new(NFTA_DYNSET_SET_NAME, name),
        number(NFTA_DYNSET_OP, NFT_DYNSET_OP_UPDATE),
        register(NFTA_DYNSET_SREG_KEY, reg(key)),
    ];
    attributes.extend(data.map(|data| register(NFTA_DYNSET_SREG_DATA, reg(data))));
    other("dynset", attributes)
}

/// `hash reg <to> = jhash(reg <from>, <len>, <seed>) % mod <modulus>
/// offset <offset>`: the kernel's `reciprocal_scale(jhash(…), modulus) +
/// offset`, a host-order `u32`.
pub(super) fn jhash(
    from: u32,
    len: u32,
    to: u32,
    seed: u32,
    modulus: u32,
    offset: u32,
) -> Expressions {
    other(
        "hash",
        vec![
            register(NFTA_HASH_SREG, reg(from)),
            register(NFTA_HASH_DREG, reg(to)),
            number(NFTA_HASH_LEN, len),
            number(NFTA_HASH_MODULUS, modulus),
            number(NFTA_HASH_SEED, seed),
            number(NFTA_HASH_OFFSET, offset),
            number(NFTA_HASH_TYPE, NFT_HASH_JENKINS),
        ],
    )
}

/// `byteorder reg <at> = hton(reg <at>, 2, 2)`: the register's low 16
/// bits (a host-order number below 65536) become a big-endian port in its
/// first two bytes, which is where `nat` reads one (`nft_reg_load16`, as
/// a `__be16`).
pub(super) fn hton16(at: u32) -> Expressions {
    other(
        "byteorder",
        vec![
            register(NFTA_BYTEORDER_SREG, reg(at)),
            register(NFTA_BYTEORDER_DREG, reg(at)),
            number(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON),
            number(NFTA_BYTEORDER_LEN, 2),
            number(NFTA_BYTEORDER_SIZE, 2),
        ],
    )
}

/// `nat <snat|dnat> ip addr_min reg <addr> proto_min reg <port>`: to
/// exactly that address and port (`min = max`).
pub(super) fn nat(kind: Nat, addr: u32, port: u32) -> Expressions {
    other(
        "nat",
        vec![
            number(NFTA_NAT_TYPE, kind as u32),
            number(NFTA_NAT_FAMILY, NFPROTO_IPV4),
            register(NFTA_NAT_REG_ADDR_MIN, reg(addr)),
            register(NFTA_NAT_REG_PROTO_MIN, reg(port)),
            number(NFTA_NAT_FLAGS, NF_NAT_RANGE_MAP_IPS_PROTO_SPECIFIED),
        ],
    )
}
