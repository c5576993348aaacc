//! Unit tests of `stun`: the codec against RFC 5769's vectors and bad
//! datagrams, and a responder and the classifier on the loopback of a
//! network namespace of the test's own; the classifier's tests in
//! `classify`.

mod classify;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::client::{self, receive};
use super::message::{Attribute, Change, Class, Message, TransactionId};
use super::*;

/// Bytes from a hex dump ("01 01 00 3c …").
fn hex(dump: &str) -> Vec<u8> {
    dump.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).unwrap())
        .collect()
}

/// RFC 5769, section 2.2: "Sample IPv4 Response", XOR-MAPPED-ADDRESS
/// 192.0.2.1:32853, with MESSAGE-INTEGRITY and FINGERPRINT.
const RFC5769_IPV4_RESPONSE: &str = "
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96";

/// RFC 5769, section 2.3: "Sample IPv6 Response", XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const RFC5769_IPV6_RESPONSE: &str = "
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c";

const RFC5769_TRANSACTION: TransactionId = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn the_rfc_5769_ipv4_response_decodes_and_its_xor_mapped_address_encodes_byte_for_byte() {
    let vector = hex(RFC5769_IPV4_RESPONSE);
    let message = Message::decode(&vector).unwrap();
    let mapped: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(message.class, Class::Success);
    assert_eq!(message.transaction, RFC5769_TRANSACTION);
    // MESSAGE-INTEGRITY and FINGERPRINT are skipped.
    assert_eq!(
        message.attributes,
        [
            Attribute::Software("test vector".to_owned()),
            Attribute::XorMappedAddress(mapped),
        ]
    );
    assert_eq!(message.mapped(), Some(mapped));

    let ours = Message {
        class: Class::Success,
        transaction: RFC5769_TRANSACTION,
        attributes: vec![
            Attribute::Software("test vector".to_owned()),
            Attribute::XorMappedAddress(mapped),
        ],
    }
    .encode();
    // The header but its length, SOFTWARE but its padding byte (the RFC
    // pads with a space, we with zero), and XOR-MAPPED-ADDRESS exactly.
    assert_eq!(ours.len(), 48);
    assert_eq!(ours[..2], vector[..2]);
    assert_eq!(ours[2..4], [0, 28]);
    assert_eq!(ours[4..35], vector[4..35]);
    assert_eq!(ours[35], 0);
    assert_eq!(ours[36..48], vector[36..48]);
}

#[test]
fn the_rfc_5769_ipv6_response_decodes() {
    let message = Message::decode(&hex(RFC5769_IPV6_RESPONSE)).unwrap();
    assert_eq!(
        message.mapped(),
        Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        )
    );
}

#[test]
fn every_attribute_round_trips_in_both_families() {
    for (a, b) in [
        ("192.0.2.1:32853", "198.51.100.7:3479"),
        ("[2001:db8::1]:1", "[fe80::2]:65535"),
    ] {
        let (a, b): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
        let message = Message {
            class: Class::Success,
            transaction: [7; 12],
            attributes: vec![
                Attribute::XorMappedAddress(a),
                Attribute::MappedAddress(b),
                Attribute::ChangeRequest(Change {
                    ip: true,
                    port: false,
                }),
                Attribute::ResponseOrigin(a),
                Attribute::OtherAddress(b),
                Attribute::SourceAddress(b),
                Attribute::ChangedAddress(a),
                Attribute::Software("odd length".to_owned()),
            ],
        };
        let bytes = message.encode();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }
    let request = Message::request(
        [1; 12],
        Change {
            ip: true,
            port: true,
        },
    );
    let bytes = request.encode();
    // CHANGE-REQUEST with change IP (0x4) and change port (0x2).
    assert_eq!(bytes[20..], [0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0x06]);
    assert_eq!(
        Message::decode(&bytes).unwrap().change(),
        Change {
            ip: true,
            port: true
        }
    );
    assert_eq!(
        Message::request([1; 12], Change::default()).encode().len(),
        20
    );
}

#[test]
fn malformed_datagrams_are_errors_not_panics() {
    let vector = hex(RFC5769_IPV4_RESPONSE);
    for len in 0..vector.len() {
        assert!(
            Message::decode(&vector[..len]).is_err(),
            "a prefix of {len} bytes"
        );
    }
    let broken = |at: usize, byte: u8| {
        let mut bytes = vector.clone();
        bytes[at] = byte;
        Message::decode(&bytes).unwrap_err().0
    };
    assert_eq!(broken(0, 0x41), "the first two bits are not zero");
    assert_eq!(broken(4, 0x22), "no magic cookie");
    assert_eq!(broken(3, 0x40), "its length does not match the datagram's");
    assert_eq!(
        broken(1, 0x11),
        "neither a Binding Request nor a Success Response"
    );
    assert_eq!(broken(22, 0x01), "an attribute is longer than the message");
    assert_eq!(broken(75, 0x05), "an attribute is longer than the message");
    assert_eq!(broken(37, 0x03), "CHANGE-REQUEST is not four bytes long");
    assert_eq!(broken(39, 0x07), "an IPv4 address is not four bytes long");
    assert_eq!(
        broken(41, 0x03),
        "an address attribute has an unknown family"
    );
    assert_eq!(
        broken(41, 0x02),
        "an IPv6 address is not sixteen bytes long"
    );
    // Every byte of the vector overwritten with every value: no panic.
    for at in 0..vector.len() {
        for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let _ = broken_or_not(&vector, at, byte);
        }
    }
    let mut garbage = vec![0; 20];
    garbage[4..8].copy_from_slice(&super::message::MAGIC_COOKIE.to_be_bytes());
    garbage.extend_from_slice(&[0x00, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00]);
    garbage[1] = 0x01;
    garbage[3] = 8;
    assert_eq!(
        Message::decode(&garbage).unwrap_err().0,
        "an address attribute is cut short"
    );
}

fn broken_or_not(vector: &[u8], at: usize, byte: u8) -> bool {
    let mut bytes = vector.to_vec();
    bytes[at] = byte;
    Message::decode(&bytes).is_ok()
}

#[test]
fn retransmissions_double_and_stay_within_the_timeout() {
    let ms = Duration::from_millis;
    assert_eq!(client::schedule(ms(700)), [ms(100), ms(200), ms(400)]);
    assert_eq!(
        client::schedule(ms(1000)),
        [ms(100), ms(200), ms(400), ms(300)]
    );
    assert_eq!(client::schedule(ms(50)), [ms(50)]);
    assert!(client::schedule(Duration::ZERO).is_empty());
}

/// Runs `test` in a fresh network namespace whose `lo` is up: 127.0.0.1
/// and 127.0.0.2 are there, and nothing else.
pub(super) fn on_private_loopback<T: Send>(test: impl FnOnce() -> T + Send) -> T {
    let (netns, ()) = crate::kernel::userns::create_netns(|| {
        let lo = crate::kernel::sys::if_index("lo").map_err(|e| crate::Error::os("find lo", e))?;
        crate::kernel::rtnl::Rtnl::open("stun test")?.set_up(lo)
    })
    .unwrap();
    crate::kernel::netns::run_in(netns.as_fd(), || Ok(test())).unwrap()
}

pub(super) const PRIMARY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
pub(super) const ALTERNATE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// One request from `socket` to `to`, asking for `change`; the answer's
/// datagram source and message.
fn ask(socket: &UdpSocket, to: SocketAddr, change: Change) -> (SocketAddr, Message) {
    socket
        .send_to(&Message::request([9; 12], change).encode(), to)
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0; 2048];
    let (len, source) = socket.recv_from(&mut buf).unwrap();
    (source, Message::decode(&buf[..len]).unwrap())
}

#[test]
fn the_responder_answers_from_the_socket_the_change_request_asks_for() {
    on_private_loopback(|| {
        let responder = Responder::start(PRIMARY, ALTERNATE, [3478, 3479]).unwrap();
        let addrs = responder.addrs();
        let at = |ip, port| SocketAddr::new(ip, port);
        assert_eq!(
            addrs,
            [
                at(PRIMARY, 3478),
                at(PRIMARY, 3479),
                at(ALTERNATE, 3478),
                at(ALTERNATE, 3479)
            ]
        );
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = client.local_addr().unwrap();
        for (to, other) in [(0, 3), (1, 2), (2, 1), (3, 0)] {
            for (ip, port) in [(false, false), (false, true), (true, false), (true, true)] {
                let (source, answer) = ask(&client, addrs[to], Change { ip, port });
                let expected = addrs[to ^ (usize::from(ip) * 2 + usize::from(port))];
                let case = format!("to {}, change ip {ip} port {port}", addrs[to]);
                assert_eq!(source, expected, "{case}");
                assert_eq!(answer.class, Class::Success, "{case}");
                assert_eq!(answer.transaction, [9; 12], "{case}");
                assert_eq!(answer.origin(), Some(source), "{case}");
                assert_eq!(answer.other(), Some(addrs[other]), "{case}");
                assert_eq!(answer.mapped(), Some(me), "{case}");
                for attribute in [
                    Attribute::MappedAddress(me),
                    Attribute::XorMappedAddress(me),
                    Attribute::ResponseOrigin(source),
                    Attribute::SourceAddress(source),
                    Attribute::OtherAddress(addrs[other]),
                    Attribute::ChangedAddress(addrs[other]),
                ] {
                    assert!(
                        answer.attributes.contains(&attribute),
                        "{case}: {attribute:?}"
                    );
                }
            }
        }
    });
}

#[test]
fn the_responder_drops_garbage_and_keeps_answering() {
    on_private_loopback(|| {
        let responder = Responder::start(PRIMARY, ALTERNATE, [0, 0]).unwrap();
        let [primary, ..] = responder.addrs();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut truncated = Message::request([3; 12], Change::default()).encode();
        truncated.truncate(19);
        let response = Message {
            class: Class::Success,
            transaction: [4; 12],
            attributes: Vec::new(),
        };
        for garbage in [
            &b""[..],
            b"GET / HTTP/1.1\r\n",
            &truncated,
            &response.encode(),
        ] {
            client.send_to(garbage, primary).unwrap();
        }
        let mapped = binding(&client, primary, Duration::from_secs(2)).unwrap();
        assert_eq!(mapped, client.local_addr().unwrap());
        // Only the one answer came: garbage and responses got none.
        let mut buf = [0; 2048];
        assert!(
            crate::kernel::sys::poll_readable(client.as_fd(), Some(Duration::from_millis(100)))
                .unwrap()
                .then(|| receive(&client, &mut buf).unwrap())
                .is_none()
        );
    });
}

#[test]
fn a_responder_stops_promptly_when_dropped_and_frees_its_ports() {
    on_private_loopback(|| {
        let responder = Responder::start(PRIMARY, ALTERNATE, [3478, 3479]).unwrap();
        let addrs = responder.addrs();
        // Dropped, it has closed its sockets: their ports are free at once.
        drop(responder);
        for addr in addrs {
            UdpSocket::bind(addr).unwrap();
        }
        // Nobody answers any more: a typed timeout, after about the timeout.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let asked = Instant::now();
        let error = binding(&client, addrs[0], Duration::from_millis(300)).unwrap_err();
        assert!(asked.elapsed() >= Duration::from_millis(300));
        assert!(
            matches!(&error, crate::Error::Os { source, .. } if source.kind() == std::io::ErrorKind::TimedOut),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "failed to get a STUN binding from 127.0.0.1:3478: no answer within 300ms"
        );
    });
}

#[test]
fn a_request_nobody_answers_is_none_after_three_sends() {
    on_private_loopback(|| {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = silent.local_addr().unwrap();
        let asked = Instant::now();
        let answer =
            client::transaction(&client, server, Change::default(), client::MAY_NOT_ANSWER)
                .unwrap();
        assert_eq!(answer, None);
        assert!(asked.elapsed() >= Duration::from_millis(700));
        let mut buf = [0; 64];
        let mut requests = 0;
        while receive(&silent, &mut buf).unwrap().is_some() {
            requests += 1;
        }
        assert_eq!(requests, 3);
    });
}

#[test]
fn a_responder_refuses_addresses_it_cannot_answer_from() {
    let refused = |primary: &str, alternate: &str, ports| {
        Responder::start(primary.parse().unwrap(), alternate.parse().unwrap(), ports)
            .unwrap_err()
            .to_string()
    };
    assert!(refused("127.0.0.1", "127.0.0.1", [1, 2]).ends_with("addresses must differ"));
    assert!(refused("127.0.0.1", "::1", [1, 2]).ends_with("of the same family"));
    assert!(refused("0.0.0.0", "127.0.0.1", [1, 2]).ends_with("not unspecified"));
    assert!(refused("127.0.0.1", "127.0.0.2", [5, 5]).ends_with("ports must differ"));
}
