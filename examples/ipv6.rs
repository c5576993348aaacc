//! A dual-stack lab: what a container sees of IPv6 (its addresses, its
//! default route, the lab's names), reachability over both families from
//! the prober, and the bug IPv6 finds first: a server bound to the IPv4
//! wildcard only, open over IPv4 and closed over IPv6.
//!
//! Run it with `cargo run --example ipv6` (as root, or as a user where
//! unprivileged user namespaces are allowed). It runs `ip`, `getent` and
//! `ping` inside a container to show what the container itself sees.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use netns_harness::probe::{ProbeOptions, Prober, TcpOutcome};
use netns_harness::{Lab, Spec, Stack, Stdio};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs on the outside host: a server that listens on IPv4 only, as
/// `TcpListener::bind("0.0.0.0:8080")` does.
fn ipv4_only_server() {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind the server");
    for stream in listener.incoming() {
        drop(stream);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lab = Lab::builder().stack(Stack::Dual).build()?;
    let db = lab.spawn(&Spec::command("sleep").arg("60").name("db"))?;
    println!(
        "lab {} and {}; gateway {} and {}; db at {:?}",
        lab.subnet(),
        lab.subnet6().ok_or("no IPv6 subnet")?,
        lab.gateway(),
        lab.gateway6().ok_or("no IPv6 gateway")?,
        db.addrs()
    );

    // What a container sees, by its own tools.
    let script = "ip -6 -br addr show dev eth0; ip -6 route show default; \
                  getent ahostsv6 db | head -1; ping -6 -c1 -n outside | head -2";
    let out = lab
        .spawn(
            &Spec::command("sh")
                .args(["-c", script])
                .name("client")
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )?
        .output(TIMEOUT)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    // The prober, from db, over both families.
    let prober = Prober::in_netns(db.netns())?;
    for dst in [
        IpAddr::V4(lab.outside_addr4()),
        lab.outside_addr6().ok_or("no IPv6 outside")?.into(),
    ] {
        let outcome = prober.icmp(dst, ProbeOptions::default())?;
        println!("prober: ICMP echo to {dst}: {outcome}");
    }

    // A server that forgot IPv6.
    let _server = lab.spawn_outside(&Spec::function(ipv4_only_server))?;
    let tcp = |dst: IpAddr| prober.tcp(dst, PORT, ProbeOptions::default());
    let start = Instant::now();
    while !tcp(lab.outside_addr4().into())?.is_open() {
        if start.elapsed() > TIMEOUT {
            return Err("the server never listened".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for dst in [
        IpAddr::V4(lab.outside_addr4()),
        lab.outside_addr6().ok_or("no IPv6 outside")?.into(),
    ] {
        let outcome: TcpOutcome = tcp(dst)?;
        println!("prober: TCP SYN to {dst} port {PORT} (server bound to 0.0.0.0): {outcome}");
    }
    Ok(())
}
