//! nf_tables over netlink: the lab's masquerade rule, built as the
//! expression list `nft --debug=netlink` shows for
//! `ip saddr <subnet> oifname "<uplink>" counter masquerade`.

use crate::error::{Error, Result};
use crate::netlink::{
    F_ACK, F_APPEND, F_CREATE, F_DUMP, F_REQUEST, Message, Refusal, Socket, attributes,
};
use crate::subnet::Ipv4Subnet;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NF_IP_PRI_NAT_SRC: u32 = 100;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_META_OIFNAME: u32 = 7;
const IPV4_SADDR_OFFSET: u32 = 12;

/// The table that holds the lab's NAT, in the lab namespace.
pub(crate) const TABLE: &str = "netns_harness";
/// Its chain hooked at postrouting.
pub(crate) const CHAIN: &str = "postrouting";

/// `struct nfgenmsg` for `family` and resource id `res_id`.
fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn nft_message(kind: u16, flags: u16) -> Message {
    Message::new(
        (NFNL_SUBSYS_NFTABLES << 8) | kind,
        flags,
        &nfgenmsg(libc::NFPROTO_IPV4 as u8, 0),
    )
}

/// Appends one expression `name` whose data attributes `data` adds.
fn expr(msg: Message, name: &str, data: impl FnOnce(Message) -> Message) -> Message {
    let msg = msg
        .begin(NFTA_LIST_ELEM)
        .attr_str(NFTA_EXPR_NAME, name)
        .begin(NFTA_EXPR_DATA);
    data(msg).end().end()
}

/// A `NFTA_DATA_VALUE` nested in attribute `kind`.
fn value(msg: Message, kind: u16, bytes: &[u8]) -> Message {
    msg.begin(kind).attr(NFTA_DATA_VALUE, bytes).end()
}

/// Installs, in one transaction,
/// `table ip netns_harness { chain postrouting { type nat hook postrouting priority srcnat; policy accept;
///  ip saddr <subnet> oifname "<uplink>" counter masquerade } }`.
pub(crate) fn install_masquerade(
    socket: &mut Socket,
    subnet: Ipv4Subnet,
    uplink: &str,
) -> Result<()> {
    let mut ifname = [0u8; libc::IFNAMSIZ];
    for (dst, src) in ifname.iter_mut().zip(uplink.as_bytes()) {
        *dst = *src;
    }
    let batch = |kind| {
        Message::new(
            kind,
            F_REQUEST,
            &nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES),
        )
    };
    let table = nft_message(NFT_MSG_NEWTABLE, F_REQUEST | F_CREATE | F_ACK)
        .attr_str(NFTA_TABLE_NAME, TABLE);
    let chain = nft_message(NFT_MSG_NEWCHAIN, F_REQUEST | F_CREATE | F_ACK)
        .attr_str(NFTA_CHAIN_TABLE, TABLE)
        .attr_str(NFTA_CHAIN_NAME, CHAIN)
        .begin(NFTA_CHAIN_HOOK)
        .attr_be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING)
        .attr_be32(NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_SRC)
        .end()
        .attr_be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .attr_str(NFTA_CHAIN_TYPE, "nat");
    let mut rule = nft_message(NFT_MSG_NEWRULE, F_REQUEST | F_CREATE | F_APPEND | F_ACK)
        .attr_str(NFTA_RULE_TABLE, TABLE)
        .attr_str(NFTA_RULE_CHAIN, CHAIN)
        .begin(NFTA_RULE_EXPRESSIONS);
    // ip saddr & mask == network
    rule = expr(rule, "payload", |m| {
        m.attr_be32(1, NFT_REG_1) // NFTA_PAYLOAD_DREG
            .attr_be32(2, NFT_PAYLOAD_NETWORK_HEADER) // NFTA_PAYLOAD_BASE
            .attr_be32(3, IPV4_SADDR_OFFSET) // NFTA_PAYLOAD_OFFSET
            .attr_be32(4, 4) // NFTA_PAYLOAD_LEN
    });
    rule = expr(rule, "bitwise", |m| {
        let m = m
            .attr_be32(1, NFT_REG_1) // NFTA_BITWISE_SREG
            .attr_be32(2, NFT_REG_1) // NFTA_BITWISE_DREG
            .attr_be32(3, 4); // NFTA_BITWISE_LEN
        let m = value(m, 4, &subnet.netmask().octets()); // NFTA_BITWISE_MASK
        value(m, 5, &[0; 4]) // NFTA_BITWISE_XOR
    });
    rule = expr(rule, "cmp", |m| {
        let m = m.attr_be32(1, NFT_REG_1).attr_be32(2, NFT_CMP_EQ); // SREG, OP
        value(m, 3, &subnet.network().octets()) // NFTA_CMP_DATA
    });
    // oifname == uplink
    rule = expr(rule, "meta", |m| {
        m.attr_be32(1, NFT_REG_1).attr_be32(2, NFT_META_OIFNAME) // DREG, KEY
    });
    rule = expr(rule, "cmp", |m| {
        let m = m.attr_be32(1, NFT_REG_1).attr_be32(2, NFT_CMP_EQ);
        value(m, 3, &ifname)
    });
    rule = expr(rule, "counter", |m| m);
    rule = expr(rule, "masq", |m| m);
    let rule = rule.end();
    socket
        .transact(vec![
            batch(NFNL_MSG_BATCH_BEGIN),
            table,
            chain,
            rule,
            batch(NFNL_MSG_BATCH_END),
        ])
        .map(drop)
        .map_err(|Refusal { error, message }| Error::Netlink {
            operation: format!(
                "add nftables rule \"ip saddr {subnet} oifname {uplink} masquerade\" (table ip {TABLE})"
            ),
            namespace: "lab",
            source: error,
            kernel_message: message,
        })
}

/// The packets and bytes the lab's masquerade rule has counted (`nft list
/// chain ip netns_harness postrouting`).
pub(crate) fn masquerade_counter(socket: &mut Socket) -> Result<(u64, u64)> {
    let rules = socket
        .dump(|| {
            nft_message(NFT_MSG_GETRULE, F_REQUEST | F_DUMP)
                .attr_str(NFTA_RULE_TABLE, TABLE)
                .attr_str(NFTA_RULE_CHAIN, CHAIN)
        })
        .map_err(|Refusal { error, message }| Error::Netlink {
            operation: format!("list the rules of table ip {TABLE}"),
            namespace: "lab",
            source: error,
            kernel_message: message,
        })?;
    let be64 = |b: &[u8]| b.try_into().map_or(0, u64::from_be_bytes);
    let mut counted = (0, 0);
    // nfgenmsg, then the rule's attributes.
    for rule in rules.iter().filter_map(|r| r.get(4..)) {
        for (_, list) in attributes(rule).filter(|(k, _)| *k == NFTA_RULE_EXPRESSIONS) {
            for (_, expr) in attributes(list) {
                let is_counter = attributes(expr)
                    .any(|(k, v)| k == NFTA_EXPR_NAME && v.starts_with(b"counter\0"));
                let data = attributes(expr).find(|(k, _)| *k == NFTA_EXPR_DATA);
                if let (true, Some((_, data))) = (is_counter, data) {
                    for (kind, value) in attributes(data) {
                        match kind {
                            NFTA_COUNTER_PACKETS => counted.0 += be64(value),
                            NFTA_COUNTER_BYTES => counted.1 += be64(value),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    Ok(counted)
}
