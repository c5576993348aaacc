//! Tests of the NAT: its messages parsed back, and (in [`lab`]) real
//! routers translating real datagrams.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload, Nla};
use netlink_packet_netfilter::NetfilterMessageInner;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ExpressionAttribute, Expressions, Hook, Lookup, RuleAttribute, SetAttribute,
    SetFlags, TableAttribute, TableMessage,
};

use super::ruleset::{nat_batch, rules_of};
use super::*;
use crate::common::nat::{Filtering, Mapping};
use crate::kernel::netlink::bytes_of;

mod lab;

/// `message` as the kernel receives it, parsed back: its flags and payload.
fn parsed(message: NetlinkMessage<NetfilterMessage>) -> (u16, NetfilterMessageInner) {
    let bytes = bytes_of(message);
    let message = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes).unwrap();
    assert_eq!(message.header.length as usize, bytes.len());
    match message.payload {
        NetlinkPayload::InnerMessage(inner) => (message.header.flags, inner.inner),
        other => panic!("not a netfilter message: {other:?}"),
    }
}

/// The rules of the batch, by chain: each rule's expression names, with
/// the set a `lookup` reads written `lookup:<set>`.
fn rules(batch: Vec<NetlinkMessage<NetfilterMessage>>) -> Vec<(String, Vec<String>)> {
    let mut rules = Vec::new();
    for (_, message) in batch.into_iter().map(parsed) {
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)) = message else {
            continue;
        };
        let (mut chain, mut names) = (String::new(), Vec::new());
        for attribute in rule.attributes {
            match attribute {
                RuleAttribute::Chain(name) => chain = name,
                RuleAttribute::Expressions(list) => {
                    for element in list {
                        let ListAttribute::Element(attributes) = element else {
                            panic!("not an expression: {element:?}");
                        };
                        names.push(name_of(&attributes));
                    }
                }
                _ => {}
            }
        }
        rules.push((chain, names));
    }
    rules
}

fn name_of(attributes: &[ExpressionAttribute]) -> String {
    let mut name = String::new();
    for attribute in attributes {
        match attribute {
            ExpressionAttribute::Name(n) => name.clone_from(n),
            ExpressionAttribute::Data(Expressions::Lookup(lookup)) => {
                for l in lookup {
                    if let Lookup::Set(set) = l {
                        name = format!("lookup:{set}");
                    }
                }
            }
            _ => {}
        }
    }
    name
}

fn router(nat: Nat) -> NatRules<'static> {
    NatRules {
        lan: "10.9.0.0/24".parse().unwrap(),
        lan_if: "br0",
        wan_if: "uplink",
        public: Ipv4Addr::new(203, 0, 113, 2),
        nat,
        seed: 0x5eed,
    }
}

/// The names of the rules of `chain`.
fn chain_rules(all: &[(String, Vec<String>)], chain: &str) -> Vec<Vec<String>> {
    all.iter()
        .filter(|(c, _)| c == chain)
        .map(|(_, names)| names.clone())
        .collect()
}

#[test]
fn the_nat_is_one_transaction_that_creates_its_table_exclusively() {
    let rules = router(Nat::new(
        Mapping::EndpointIndependent,
        Filtering::EndpointIndependent,
    ));
    let batch: Vec<_> = nat_batch(&rules).into_iter().map(parsed).collect();
    assert_eq!(batch[0].1, ControlMessage::BatchBegin.into());
    assert_eq!(batch.last().unwrap().1, ControlMessage::BatchEnd.into());
    let (flags, table) = &batch[1];
    assert_eq!(
        *flags,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
    );
    assert_eq!(
        table,
        &NfTablesMessage::NewTable(TableMessage {
            attributes: vec![TableAttribute::Name("netns_harness_nat".into())]
        })
        .into()
    );
    let hooks: Vec<_> = batch
        .iter()
        .filter_map(|(_, m)| match m {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewChain(c)) => Some(c),
            _ => None,
        })
        .map(|c| {
            c.attributes.iter().find_map(|a| match a {
                ChainAttribute::Hook(hook) => Some(hook[1].clone()),
                _ => None,
            })
        })
        .collect();
    let priorities = [100, 110, -100, 0, 0].map(|p: i32| Some(Hook::Priority(p.cast_unsigned())));
    assert_eq!(hooks, priorities);
    // The mappings forget an idle endpoint after the UDP timeout.
    let mappings = batch.iter().find_map(|(_, m)| match m {
        NetfilterMessageInner::NfTables(NfTablesMessage::NewSet(set))
            if set
                .attributes
                .contains(&SetAttribute::Name("mappings".into())) =>
        {
            Some(set)
        }
        _ => None,
    });
    let mappings = mappings.expect("the mappings map");
    assert!(
        mappings
            .attributes
            .contains(&SetAttribute::Timeout(120_000))
    );
    assert!(mappings.attributes.contains(&SetAttribute::Flags(
        SetFlags::Map | SetFlags::Timeout | SetFlags::Eval
    )));
    assert!(mappings.attributes.contains(&SetAttribute::KeyLen(8)));
}

#[test]
fn the_port_is_a_hash_of_the_mappings_key_turned_big_endian() {
    for (mapping, key_fields) in [
        (Mapping::EndpointIndependent, 2),
        (Mapping::AddressDependent, 3),
        (Mapping::AddressAndPortDependent, 4),
    ] {
        let rules = router(Nat::new(mapping, Filtering::AddressAndPortDependent));
        let snat = &chain_rules(&self::rules(nat_batch(&rules)), "postrouting")[0];
        let tail: Vec<&str> = snat
            .iter()
            .rev()
            .take(4 + key_fields)
            .map(String::as_str)
            .collect();
        let mut expected = vec!["nat", "byteorder", "hash", "immediate"];
        expected.extend(std::iter::repeat_n("ct", key_fields));
        assert_eq!(tail, expected, "{mapping}");
        // The hash reads 4 bytes per field of its key.
        let hash = snat_hash(&rules);
        assert_eq!(hash[2], 4 * key_fields as u32, "{mapping}");
    }
}

/// The hash's attributes in the source NAT rule: source register,
/// destination, length, modulus, seed, offset, type.
fn snat_hash(rules: &NatRules) -> Vec<u32> {
    let (_, expressions) = rules_of(rules).swap_remove(0);
    expressions
        .into_iter()
        .find_map(|e| match e {
            Expressions::Other {
                expression_type,
                attributes,
            } if expression_type == "hash" => Some(attributes),
            _ => None,
        })
        .unwrap()
        .iter()
        .map(|a| {
            let mut v = vec![0; 4];
            a.emit_value(&mut v);
            u32::from_be_bytes(v.try_into().unwrap())
        })
        .collect()
}

#[test]
fn the_hash_covers_ports_20000_to_59999_with_the_seed() {
    let rules = router(Nat::new(
        Mapping::EndpointIndependent,
        Filtering::EndpointIndependent,
    ));
    assert_eq!(
        snat_hash(&rules),
        [8 + 8, 8 + 1, 8, 40000, 0x5eed, 20000, 0]
    );
}

#[test]
fn each_filtering_lets_in_through_its_own_rules() {
    let lookups = |filtering| {
        let rules = router(Nat::new(Mapping::EndpointIndependent, filtering));
        let all = self::rules(nat_batch(&rules));
        let sets = |chain| {
            chain_rules(&all, chain)
                .into_iter()
                .map(|names| {
                    let sets = names.into_iter().filter(|n| n.starts_with("lookup:"));
                    sets.filter(|n| n != "lookup:transports")
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        (sets("prerouting"), chain_rules(&all, "mapping").len())
    };
    let (forwards, mappings, peers) = ("lookup:forwards", "lookup:mappings", "lookup:peers");
    // From the public side first, then hairpinned from the LAN.
    let (prerouting, mapping) = lookups(Filtering::EndpointIndependent);
    assert_eq!(
        prerouting,
        [
            vec![forwards],
            vec![mappings],
            vec![forwards],
            vec![mappings]
        ]
    );
    assert_eq!(mapping, 2);
    let (prerouting, mapping) = lookups(Filtering::AddressDependent);
    assert_eq!(
        prerouting,
        [
            vec![forwards],
            vec![peers, mappings],
            vec![forwards],
            vec![mappings]
        ]
    );
    assert_eq!(mapping, 3);
    let (prerouting, mapping) = lookups(Filtering::AddressAndPortDependent);
    assert_eq!(prerouting, [vec![forwards], vec![forwards], vec![mappings]]);
    assert_eq!(mapping, 2);
}

#[test]
fn without_hairpinning_the_lan_cannot_reach_the_public_address() {
    let nat = Nat::new(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
    let all = rules(nat_batch(&router(nat.hairpinning(false))));
    assert_eq!(chain_rules(&all, "postrouting").len(), 1);
    assert_eq!(chain_rules(&all, "prerouting").len(), 2);
    let input = chain_rules(&all, "input");
    assert_eq!(input.len(), 2);
    assert_eq!(input[1].last().map(String::as_str), Some("immediate"));
    let all = rules(nat_batch(&router(nat)));
    assert_eq!(chain_rules(&all, "input").len(), 1);
}

#[test]
fn a_forward_is_keyed_by_protocol_and_port_in_two_registers() {
    assert_eq!(
        port_key(Protocol::Udp, 8000),
        [17, 0, 0, 0, 0x1f, 0x40, 0, 0]
    );
    assert_eq!(port_key(Protocol::Tcp, 22), [6, 0, 0, 0, 0, 22, 0, 0]);
    let element = vec![
        SetElementAttribute::Key(value(port_key(Protocol::Udp, 8000))),
        SetElementAttribute::Data(value(vec![10, 9, 0, 3, 0x1b, 0x58, 0, 0])),
    ];
    let reply = ip(
        NfTablesMessage::NewSetElement(elements(FORWARDS, vec![element])),
        0,
    );
    let (_, inner) = parsed(reply);
    let reply = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        inner,
    );
    assert_eq!(
        forward_target(&reply),
        Some("10.9.0.3:7000".parse().unwrap())
    );
}

/// Linux's `jhash` (`include/linux/jhash.h`) of `key`, on a little-endian
/// machine: an independent oracle of the port the router must choose.
fn jhash(key: &[u8], seed: u32) -> u32 {
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(seed);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = key;
    while k.len() > 12 {
        a = a.wrapping_add(word(k));
        b = b.wrapping_add(word(&k[4..]));
        c = c.wrapping_add(word(&k[8..]));
        for (x, y, z, r) in [
            (0, 2, 1, 4),
            (1, 0, 2, 6),
            (2, 1, 0, 8),
            (0, 2, 1, 16),
            (1, 0, 2, 19),
            (2, 1, 0, 4),
        ] {
            let mut v = [a, b, c];
            v[x] = v[x].wrapping_sub(v[y]) ^ v[y].rotate_left(r);
            v[y] = v[y].wrapping_add(v[z]);
            [a, b, c] = v;
        }
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..k.len()].copy_from_slice(k);
    a = a.wrapping_add(word(&tail));
    b = b.wrapping_add(word(&tail[4..]));
    c = c.wrapping_add(word(&tail[8..]));
    for (x, y, r) in [
        (2, 1, 14),
        (0, 2, 11),
        (1, 0, 25),
        (2, 1, 16),
        (0, 2, 4),
        (1, 0, 14),
        (2, 1, 24),
    ] {
        let mut v = [a, b, c];
        v[x] = (v[x] ^ v[y]).wrapping_sub(v[y].rotate_left(r));
        [a, b, c] = v;
    }
    c
}

#[test]
fn jhash_is_the_kernels() {
    // lookup3.c's published check values: hashlittle("", 0) and
    // hashlittle("Four score and seven years ago", 0) (jhash is
    // hashlittle with the key's length added to the seed).
    assert_eq!(jhash(b"", 0), 0xdead_beef);
    assert_eq!(jhash(b"Four score and seven years ago", 0), 0x1777_0551);
    assert_eq!(jhash(b"Four score and seven years ago", 1), 0xcd62_8161);
}

/// The public port the router must choose for `key` (4 bytes per field).
fn expected_port(fields: &[&[u8]]) -> u16 {
    let key: Vec<u8> = fields
        .iter()
        .flat_map(|f| f.iter().copied().chain(std::iter::repeat(0)).take(4))
        .collect();
    let scaled = (u64::from(jhash(&key, lab::SEED)) * u64::from(PORTS)) >> 32;
    FIRST_PORT + u16::try_from(scaled).unwrap()
}
