//! Support for the end-to-end tests of netns-harness: snapshots of the
//! host's network state, and independent tools (`ip`, `nft`) run inside a
//! lab's namespaces as oracles.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a run must leave unchanged on the host: links, addresses, routes,
/// the nftables ruleset, IPv4 forwarding and `/run/netns`, each as the
/// system tools print them.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState(Vec<(String, String)>);

impl HostState {
    /// Reads the host's state with `ip`, `nft`, `sysctl` and `ls`.
    pub fn capture() -> Self {
        let run = |cmd: &str, args: &[&str]| {
            let out = Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("run {cmd}: {e} (is it installed?)"));
            // nft cannot read the host's ruleset from a user namespace; the
            // message it prints instead is stable, so it still compares.
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (format!("{cmd} {}", args.join(" ")), text)
        };
        Self(vec![
            run("ip", &["-d", "link"]),
            run("ip", &["addr"]),
            run("ip", &["route"]),
            run("ip", &["-6", "route"]),
            run("nft", &["list", "ruleset"]),
            run("cat", &["/proc/sys/net/ipv4/ip_forward"]),
            run("ls", &["-A", "/run/netns"]),
        ])
    }

    /// Panics with the differences if `self` and `after` differ.
    pub fn assert_unchanged(&self, after: &HostState) {
        for ((what, before), (_, now)) in self.0.iter().zip(&after.0) {
            assert_eq!(before, now, "the host's `{what}` changed");
        }
    }
}

/// Runs `program` with `args` in the network namespace `netns` (e.g.
/// [`netns_harness::Lab::lab_netns`]) with `nsenter`, and returns its
/// standard output. Panics if it fails.
pub fn in_netns(netns: BorrowedFd<'_>, program: &str, args: &[&str]) -> String {
    let path = format!(
        "--net=/proc/{}/fd/{}",
        std::process::id(),
        netns.as_raw_fd()
    );
    let out = Command::new("nsenter")
        .arg(path)
        .arg(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run nsenter {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many ports `lab`'s bridge has, as `ip link show master` lists them.
pub fn bridge_ports(lab: &netns_harness::Lab) -> usize {
    in_netns(
        lab.lab_netns(),
        "ip",
        &["-o", "link", "show", "master", lab.bridge()],
    )
    .lines()
    .count()
}

/// Runs the ignored test `name` of this test binary in a child that is not
/// root and may not use rootless mode: `unshare` makes it uid 65534 in a
/// user namespace, without capabilities after `execve`, whether this
/// process is root or rootless. Asserts that the child's test passed.
pub fn run_unprivileged(name: &str) {
    let out = Command::new("unshare")
        .args(["--user", "--map-user=65534", "--map-group=65534"])
        .arg(std::env::current_exe().expect("the test binary"))
        .args(["--exact", name, "--ignored", "--nocapture"])
        .env(netns_harness::ROOTLESS_VAR, "0")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{name} did not run: {stdout}");
}

/// The names of the links in `netns`, as `ip -o link` lists them.
pub fn links(netns: BorrowedFd<'_>) -> Vec<String> {
    in_netns(netns, "ip", &["-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// Reads one line from `stream`, panicking if it ends first.
pub fn read_line(stream: impl Read) -> String {
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("read a line");
    assert!(!line.is_empty(), "the stream ended before a line");
    line.trim_end().to_owned()
}

/// Polls `done` until it returns true or `timeout` passes; returns whether
/// it did.
pub fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether a process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z'))
    })
}

/// The processes (by pid) that hold the namespace whose inode is `inode`,
/// through their own namespaces or an open descriptor, as `lsns` finds them.
pub fn namespace_holders(inode: u64) -> Vec<u32> {
    let needle = format!("net:[{inode}]");
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let links = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .into_iter()
            .chain(
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok()),
            );
        if links.into_iter().any(|l| l.to_string_lossy() == needle) {
            holders.push(pid);
        }
    }
    holders
}
