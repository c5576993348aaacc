//! The "mini container" walkthrough, as a library call per step: a bridge
//! `br0` at 10.0.0.1/16, two containers `netns1` (10.0.0.2) and `netns2`
//! (10.0.0.3) on it that ping each other, IPv4 forwarding and masquerade
//! towards an outside network, and a TCP server outside that reports the
//! source address it saw.
//!
//! Run it with `cargo run --example walkthrough` (as root, or as a user
//! where unprivileged user namespaces are allowed). It needs nothing but
//! Rust: the containers ping with the harness's prober.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use netns_harness::conntrack;
use netns_harness::matrix::{Check, Endpoint, Matrix};
use netns_harness::probe::{ProbeOptions, Prober};
use netns_harness::{Lab, Spec, Stdio};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs on the outside host: accepts one connection and prints its source.
fn outside_server() {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("bind the outside server");
    println!("listening");
    let (_, peer) = listener.accept().expect("accept a connection");
    println!("{}", peer.ip());
}

/// Runs in a container: connects to the address given as its argument.
fn client() {
    let target = std::env::args().nth(1).expect("a target address");
    TcpStream::connect((target.as_str(), PORT)).expect("connect to the outside server");
}

/// Runs in a container: waits for its peer's address on standard input,
/// as the walkthrough's containers wait on a pipe, then pings it three
/// times (ICMP echo, from the container's own namespace).
fn ping_peer() {
    let mut peer = String::new();
    std::io::stdin()
        .read_line(&mut peer)
        .expect("read the peer's address");
    let peer: std::net::IpAddr = peer.trim().parse().expect("an IP address");
    let options = ProbeOptions::default().count(3);
    let outcome = Prober::here().icmp(peer, options).expect("probe");
    println!("ping {peer}: {outcome}");
    assert!(outcome.is_reachable(), "{peer} is unreachable");
}

/// Reads one line from a piped stream.
fn read_line(stream: Option<std::fs::File>) -> Result<String, Box<dyn std::error::Error>> {
    let mut line = String::new();
    BufReader::new(stream.ok_or("stream not piped")?).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::builder().subnet("10.0.0.0/16").build()?;
    println!(
        "lab: bridge {} {}/{} (gateway), NAT out of the uplink as {}, outside host {}",
        lab.bridge(),
        lab.gateway(),
        lab.subnet().prefix(),
        lab.public_addr(),
        lab.outside_addr()
    );

    // Two containers that wait for their peer's address, then ping it.
    let pinger = |name: &str| {
        Spec::function(ping_peer)
            .name(name)
            .stdin(Stdio::Piped)
            .stdout(Stdio::Piped)
    };
    let mut netns1 = lab.spawn(&pinger("netns1"))?;
    let mut netns2 = lab.spawn(&pinger("netns2"))?;
    let (addr1, addr2) = (netns1.addr(), netns2.addr());
    for (from, to) in [(&mut netns1, addr2), (&mut netns2, addr1)] {
        println!("{} has eth0 {}", from.name(), from.addr());
        writeln!(from.take_stdin().ok_or("stdin not piped")?, "{to}")?;
    }
    for container in [&mut netns1, &mut netns2] {
        let out = container.output(TIMEOUT)?;
        print!(
            "{}: {}",
            container.name(),
            String::from_utf8_lossy(&out.stdout)
        );
        if !out.status.success() {
            return Err(format!("{} could not ping its peer", container.name()).into());
        }
    }

    // Through the NAT: the outside sees the uplink address, not the container's.
    let mut server = lab.spawn_outside(&Spec::function(outside_server).stdout(Stdio::Piped))?;
    let mut server_out = BufReader::new(server.take_stdout().ok_or("stdout not piped")?);
    let mut line = String::new();
    server_out.read_line(&mut line)?;
    let mut client = lab.spawn(
        &Spec::function(client)
            .arg(lab.outside_addr().to_string())
            .name("netns1"),
    )?;
    let status = client
        .wait_timeout(TIMEOUT)?
        .ok_or("the client did not finish")?;
    if !status.success() {
        return Err(format!("the client failed: {status}").into());
    }
    let seen = read_line(Some(server_out.into_inner()))?;
    println!(
        "NAT: container {} connected to {}:{PORT}; the outside saw the connection come from {seen}",
        client.addr(),
        lab.outside_addr()
    );
    if seen != lab.public_addr().to_string() {
        return Err(format!(
            "expected the outside to see {}, it saw {seen}",
            lab.public_addr()
        )
        .into());
    }

    // The same with the prober: an ICMP echo and a TCP SYN from netns1,
    // watched from the outside host's end of the uplink.
    let netns1_probe = Prober::in_netns(netns1.netns())?;
    let capture = lab.capture_outside()?;
    let icmp = netns1_probe.icmp_flow(lab.outside_addr(), ProbeOptions::default())?;
    let tcp = netns1_probe.tcp_flow(lab.outside_addr(), PORT, ProbeOptions::default())?;
    let seen = capture.stop();
    println!(
        "prober: netns1 -> outside icmp: {}; tcp/{PORT}: {} (the server has exited)",
        icmp.outcome, tcp.outcome
    );
    for packet in seen.packets() {
        println!("  the outside saw: {packet}");
    }
    // Each flow found by its token or sequence number, not by addresses,
    // on the far side and in the NAT's conntrack table (where a reset
    // answering a SYN has already removed the TCP flow's entry).
    let table = conntrack::Table::read(lab.lab_netns())?;
    for flow in [icmp.flow, tcp.flow] {
        let translation = seen.assert_translated(&flow, lab.public_addr());
        println!("  {flow}: the outside {translation}");
        match table.find(&flow) {
            Some(entry) => println!("    conntrack: {entry}"),
            None => println!("    conntrack: no entry (closed)"),
        }
    }
    table.assert_translated(&icmp.flow, lab.public_addr());

    // Who reaches whom.
    let endpoints = [
        Endpoint::container(&netns1)?,
        Endpoint::container(&netns2)?,
        Endpoint::gateway(&lab)?,
        Endpoint::outside(&lab)?,
    ];
    let matrix = Matrix::probe(&endpoints, &[Check::Icmp], ProbeOptions::default())?;
    print!("{matrix}");
    matrix.assert_expected(|from, to, _| from != "outside" || to == "outside");
    Ok(())
}
