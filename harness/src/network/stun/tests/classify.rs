//! The classifier: against the real responder on loopback (no NAT), and
//! against a fake server that reports the mappings and filters the answers
//! of a NAT, so that every branch of RFC 5780's tests is taken.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::super::client::receive;
use super::super::message::{Attribute, Change, Class, Message};
use super::super::*;
use super::{ALTERNATE, PRIMARY, on_private_loopback};
use crate::common::nat::{Filtering, Mapping};

#[test]
fn on_loopback_classify_finds_no_nat_and_records_every_mapping() {
    on_private_loopback(|| {
        let responder = Responder::start(PRIMARY, ALTERNATE, [3478, 3479]).unwrap();
        let server = responder.addrs()[0];
        let behaviour = classify(server, Duration::from_secs(2)).unwrap();
        assert!(!behaviour.translated, "{behaviour:?}");
        assert_eq!(behaviour.mapping, Mapping::EndpointIndependent);
        assert_eq!(behaviour.filtering, Filtering::EndpointIndependent);
        assert!(behaviour.hairpinning);
        assert_eq!(
            behaviour.to_string(),
            "no NAT: endpoint-independent mapping, endpoint-independent filtering, hairpinning"
        );
        // Mapping: tests I and II; filtering: test I and test II answered;
        // hairpinning: test I.
        let to: Vec<SocketAddr> = behaviour.observations.iter().map(|o| o.server).collect();
        let alternate_same_port = SocketAddr::new(ALTERNATE, 3478);
        assert_eq!(to, [server, alternate_same_port, server, server, server]);
        for observation in &behaviour.observations {
            assert_eq!(observation.local, observation.mapped, "{observation:?}");
            assert_eq!(observation.local.ip(), PRIMARY);
        }
        // Three fresh sockets with a mapping each.
        let mut locals: Vec<_> = behaviour.observations.iter().map(|o| o.local).collect();
        locals.dedup();
        assert_eq!(locals.len(), 3, "{:?}", behaviour.observations);
    });
}

#[test]
fn a_behaviour_reads_as_one_line() {
    let behaviour = Behaviour {
        translated: true,
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
        hairpinning: false,
        observations: Vec::new(),
    };
    assert_eq!(
        behaviour.to_string(),
        "NAT: endpoint-independent mapping, address-and-port-dependent filtering, no hairpinning"
    );
}

/// A STUN server that plays a NAT: it reports `mapped(client, server
/// socket index)` as the mapped address, and answers a request only when
/// `answers(change)`; from the socket asked for, like the real one.
struct FakeNat {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    addrs: [SocketAddr; 4],
}

impl FakeNat {
    fn start(mapped: fn(SocketAddr, usize) -> SocketAddr, answers: fn(Change) -> bool) -> FakeNat {
        let sockets: Vec<UdpSocket> = [
            (PRIMARY, 3478),
            (PRIMARY, 3479),
            (ALTERNATE, 3478),
            (ALTERNATE, 3479),
        ]
        .into_iter()
        .map(|addr| UdpSocket::bind(addr).unwrap())
        .collect();
        let addrs: [SocketAddr; 4] = std::array::from_fn(|i| sockets[i].local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0; 2048];
            while !stopped.load(Ordering::SeqCst) {
                for (index, socket) in sockets.iter().enumerate() {
                    while let Some((len, from)) = receive(socket, &mut buf).unwrap() {
                        let request = Message::decode(&buf[..len]).unwrap();
                        let change = request.change();
                        if !answers(change) {
                            continue;
                        }
                        let reply = index ^ (usize::from(change.ip) * 2 + usize::from(change.port));
                        let response = Message {
                            class: Class::Success,
                            transaction: request.transaction,
                            attributes: vec![
                                Attribute::XorMappedAddress(mapped(from, index)),
                                Attribute::OtherAddress(addrs[index ^ 3]),
                            ],
                        };
                        sockets[reply].send_to(&response.encode(), from).unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        FakeNat {
            stop,
            thread: Some(thread),
            addrs,
        }
    }
}

impl Drop for FakeNat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// A public address on a port nobody listens on, one per `key`.
fn public(key: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40000 + key as u16)
}

#[test]
fn a_symmetric_nat_is_address_and_port_dependent_both_ways_without_hairpinning() {
    on_private_loopback(|| {
        // A mapping per client socket and server socket; only plain
        // requests are answered.
        let nat = FakeNat::start(
            |from, index| public(usize::from(from.port() % 1000) * 4 + index),
            |change| change == Change::default(),
        );
        let behaviour = classify(nat.addrs[0], Duration::from_secs(2)).unwrap();
        assert!(behaviour.translated);
        assert_eq!(behaviour.mapping, Mapping::AddressAndPortDependent);
        assert_eq!(behaviour.filtering, Filtering::AddressAndPortDependent);
        assert!(!behaviour.hairpinning);
        assert_eq!(
            behaviour.to_string(),
            "NAT: address-and-port-dependent mapping, address-and-port-dependent filtering, \
             no hairpinning"
        );
        // Tests I, II and III of the mapping, test I of filtering and of
        // hairpinning, each with the mapping the server reported.
        let to: Vec<SocketAddr> = behaviour.observations.iter().map(|o| o.server).collect();
        let [primary, _, alternate, other] = nat.addrs;
        assert_eq!(to, [primary, alternate, other, primary, primary]);
        for observation in &behaviour.observations {
            let index = nat
                .addrs
                .iter()
                .position(|a| *a == observation.server)
                .unwrap();
            let port = usize::from(observation.local.port() % 1000);
            assert_eq!(
                observation.mapped,
                public(port * 4 + index),
                "{observation:?}"
            );
            assert_eq!(observation.local.ip(), PRIMARY);
        }
    });
}

#[test]
fn an_address_restricted_nat_is_address_dependent_both_ways() {
    on_private_loopback(|| {
        // A mapping per server address; answers from the other port only.
        let nat = FakeNat::start(|_, index| public(index / 2), |change| !change.ip);
        let behaviour = classify(nat.addrs[0], Duration::from_secs(2)).unwrap();
        assert!(behaviour.translated);
        assert_eq!(behaviour.mapping, Mapping::AddressDependent);
        assert_eq!(behaviour.filtering, Filtering::AddressDependent);
        assert!(!behaviour.hairpinning);
        // The filtering test's answer to its change-port request is an
        // observation too.
        assert_eq!(
            behaviour.observations.len(),
            6,
            "{:?}",
            behaviour.observations
        );
    });
}

#[test]
fn a_server_without_other_address_is_not_classified() {
    on_private_loopback(|| {
        let socket = UdpSocket::bind((PRIMARY, 3478)).unwrap();
        let server = socket.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0; 2048];
            let (len, from) = socket.recv_from(&mut buf).unwrap();
            let request = Message::decode(&buf[..len]).unwrap();
            let response = Message {
                class: Class::Success,
                transaction: request.transaction,
                attributes: vec![Attribute::MappedAddress(from)],
            };
            socket.send_to(&response.encode(), from).unwrap();
        });
        let error = classify(server, Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        answering.join().unwrap();
        assert!(error.contains("has no OTHER-ADDRESS"), "{error}");
    });
}
