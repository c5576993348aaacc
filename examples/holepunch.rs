//! UDP hole punching between two peers, each on a LAN of its own behind a
//! NAT, for every pair of NAT presets, through a rendezvous server on the
//! internet segment: prints which pairs connect, next to what RFC 4787's
//! behaviours predict, and fails if they differ.
//!
//! ```text
//! sudo -E cargo run --example holepunch     (or as a user with user namespaces)
//! ```
//!
//! Each peer binds a UDP socket, registers with the rendezvous server,
//! which tells it the other peer's public endpoint as the server saw it;
//! then both send to each other for two seconds, answering what arrives.
//! A pair connects when each peer hears the other.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use netns_harness::{Filtering, Mapping, Network, Preset, Spec, Stdio, Topology};

/// The rendezvous server's port, on its container of the internet segment.
const RENDEZVOUS_PORT: u16 = 7000;
/// How long peers punch.
const PUNCH_FOR: Duration = Duration::from_secs(2);

/// The rendezvous server: remembers where each side of a pair registered
/// from and, once both have, tells each the other's endpoint.
fn rendezvous() {
    let socket = UdpSocket::bind(("0.0.0.0", RENDEZVOUS_PORT)).expect("bind the rendezvous port");
    let mut seen: HashMap<(String, String), SocketAddr> = HashMap::new();
    let mut buf = [0; 512];
    loop {
        let (len, from) = socket.recv_from(&mut buf).expect("receive");
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        // "REG <pair> <side>"
        let mut words = text.split_whitespace().skip(1);
        let (Some(pair), Some(side)) = (words.next(), words.next()) else {
            continue;
        };
        seen.insert((pair.to_owned(), side.to_owned()), from);
        let other = if side == "a" { "b" } else { "a" };
        if let Some(peer) = seen.get(&(pair.to_owned(), other.to_owned())) {
            let _ = socket.send_to(format!("PEER {peer}").as_bytes(), from);
        }
    }
}

/// A peer: `<rendezvous> <pair> <side>`. Exits 0 when it heard the other
/// peer, 1 otherwise.
fn peer() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server: SocketAddr = args[0].parse().expect("the rendezvous address");
    let (pair, side) = (&args[1], &args[2]);
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set a timeout");
    let mut buf = [0; 512];
    // Register until the server knows both sides.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut target = loop {
        assert!(
            Instant::now() < deadline,
            "the rendezvous server never answered"
        );
        let _ = socket.send_to(format!("REG {pair} {side}").as_bytes(), server);
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && from == server
            && let Some(peer) = String::from_utf8_lossy(&buf[..len]).strip_prefix("PEER ")
        {
            break peer.parse::<SocketAddr>().expect("an endpoint");
        }
    };
    // Punch: send to the peer, answer whatever it sends, and follow it to
    // the endpoint it sends from.
    let mut heard = None;
    let deadline = Instant::now() + PUNCH_FOR;
    while Instant::now() < deadline {
        let _ = socket.send_to(format!("PUNCH {pair} {side}").as_bytes(), target);
        if let Ok((len, from)) = socket.recv_from(&mut buf)
            && from != server
        {
            if buf[..len].starts_with(b"PUNCH") {
                let _ = socket.send_to(b"ACK", from);
            }
            target = from;
            heard = Some(from);
        }
    }
    match heard {
        Some(from) => println!("heard the peer from {from}"),
        None => std::process::exit(1),
    }
}

/// The presets, as rows and columns.
const PRESETS: [Preset; 6] = Preset::ALL;

/// A router's mapping and filtering as RFC 4787 names them; a network
/// without NAT maps nothing and filters nothing, which is as open as
/// endpoint-independent. Carrier NAT is two port-restricted cones, which
/// compose to one.
fn behaviour(preset: Preset) -> (Mapping, Filtering) {
    preset.nat().map_or(
        (Mapping::EndpointIndependent, Filtering::EndpointIndependent),
        |nat| (nat.mapping, nat.filtering),
    )
}

/// Whether `from`'s first packets reach `to`: `to` has sent to `from`'s
/// endpoint as the rendezvous server saw it, which opened its filter only
/// for the mapping that packet used.
fn passes(from: Preset, to: Preset) -> bool {
    let (from_mapping, _) = behaviour(from);
    let (to_mapping, to_filtering) = behaviour(to);
    // Did `to`'s packet leave through the mapping the server saw?
    let to_same_mapping = to_mapping == Mapping::EndpointIndependent;
    // Does `from`'s packet come from the endpoint the server saw?
    let from_same_endpoint = from_mapping == Mapping::EndpointIndependent;
    match to_filtering {
        Filtering::EndpointIndependent => true,
        Filtering::AddressDependent => to_same_mapping,
        Filtering::AddressAndPortDependent => to_same_mapping && from_same_endpoint,
    }
}

/// RFC 4787's prediction: a pair connects when either side's packets get
/// through (the other then answers through the hole they made).
pub(crate) fn predicted(a: Preset, b: Preset) -> bool {
    passes(a, b) || passes(b, a)
}

/// Runs every pair of presets at once, each peer on a network of its own:
/// whether the pair of A's preset `PRESETS[i]` and B's `PRESETS[j]`
/// connected, by `(i, j)`.
pub(crate) fn punch_every_pair() -> Result<HashMap<(usize, usize), bool>, netns_harness::Error> {
    let topology = Topology::builder().build()?;
    let server = topology
        .internet()
        .spawn(&Spec::function(rendezvous).name("rendezvous"))?;
    let server_addr = SocketAddr::new(server.addr(), RENDEZVOUS_PORT);
    // Every network first, then every peer: the peers punch at once.
    let mut networks = Vec::new();
    for (i, &a) in PRESETS.iter().enumerate() {
        for (j, &b) in PRESETS.iter().enumerate() {
            let pair = format!("p{i}{j}");
            let mut sides = Vec::new();
            for (side, preset) in [("a", a), ("b", b)] {
                let name = format!("{pair}{side}");
                sides.push((side, topology.add(Network::new(&name).preset(preset))?));
            }
            networks.push(((i, j), pair, sides));
        }
    }
    let mut runs = Vec::new();
    for (cell, pair, sides) in &networks {
        let mut peers = Vec::new();
        for (side, network) in sides {
            let spec = Spec::function(peer)
                .args([server_addr.to_string().as_str(), pair, side])
                .stdout(Stdio::Null);
            peers.push(network.spawn(&spec)?);
        }
        runs.push((*cell, peers));
    }
    let mut connected = HashMap::new();
    for (cell, peers) in runs {
        let mut both = true;
        for mut container in peers {
            let out = container.output(PUNCH_FOR * 4)?;
            both &= out.status.success();
        }
        connected.insert(cell, both);
    }
    Ok(connected)
}

fn main() -> Result<(), netns_harness::Error> {
    let started = Instant::now();
    let connected = punch_every_pair()?;
    let width = PRESETS.iter().map(|p| p.name().len()).max().unwrap_or(0);
    println!("UDP hole punching, peer A's NAT (rows) × peer B's NAT (columns):");
    println!(
        "  ✓ connected, · did not (as predicted); ✗ / ! connected / did not, against the prediction"
    );
    print!("{:width$} ", "");
    for b in PRESETS {
        print!(" {:>w$}", b.name(), w = b.name().len());
    }
    println!();
    let mut mismatches = 0;
    for (i, a) in PRESETS.iter().enumerate() {
        print!("{:width$} ", a.name());
        for (j, b) in PRESETS.iter().enumerate() {
            let measured = connected[&(i, j)];
            let mark = match (measured, measured == predicted(*a, *b)) {
                (true, true) => "✓",
                (false, true) => "·",
                (true, false) => "✗",
                (false, false) => "!",
            };
            mismatches += usize::from(measured != predicted(*a, *b));
            print!(" {mark:>w$}", w = b.name().len());
        }
        println!();
    }
    let pairs = PRESETS.len() * PRESETS.len();
    println!(
        "{} of {pairs} pairs as RFC 4787 predicts, in {:.1} s",
        pairs - mismatches,
        started.elapsed().as_secs_f64()
    );
    if mismatches > 0 {
        std::process::exit(1);
    }
    Ok(())
}
