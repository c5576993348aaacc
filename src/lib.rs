//! Support for the end-to-end tests of netns-harness: snapshots of the
//! host's network state, and independent tools (`ip`, `nft`) run inside a
//! lab's namespaces as oracles.
//!
//! Every process a test of the suite starts dies with it, even when the
//! test process is killed with SIGKILL: start programs with [`tool`] or
//! [`dies_with_test`], and programs that start processes of their own
//! (cargo) with [`tree_dies_with_test`].

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use netns_harness_suite_macros::needs;

pub mod rootfs;

#[expect(
    dead_code,
    reason = "`cfg_name` is for the build script and `#[needs]`"
)]
mod tools;

use tools::TOOLS;

/// What to install to get `program`, for messages of tests that need it.
pub fn package_of(program: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|(name, _)| *name == program)
        .map_or("the package that provides it", |(_, package)| package)
}

/// Where `program` is: itself if it contains a `/`, else the first
/// executable of that name in `PATH`. Panics, naming the package to
/// install, when there is none: a test that needs a missing tool fails, it
/// never passes. Mark such a test `#[needs("tool")]` ([`needs`]), so that
/// on a machine without the tool it is ignored instead, saying so.
pub fn require(program: impl AsRef<OsStr>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let program = Path::new(program.as_ref());
    let executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        executable(program).then(|| program.to_owned())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| executable(candidate))
        })
    };
    found.unwrap_or_else(|| {
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        panic!(
            "this test needs `{}`, which is not installed (not found {}); install {}",
            program.display(),
            if program.is_absolute() {
                "there"
            } else {
                "in PATH"
            },
            package_of(&name)
        )
    })
}

/// Makes `command`'s process die with the thread that spawns it
/// (`PR_SET_PDEATHSIG(SIGKILL)`): for a test, with the test, however it
/// ends, SIGKILL of the whole test process included. If the test process
/// is already gone when the child starts, the spawn fails instead.
///
/// It covers that process only: one that starts processes of its own
/// needs [`tree_dies_with_test`]. The kernel clears the signal when the
/// child executes a set-user-ID binary or one with file capabilities (such
/// as `ping` on some systems): run those inside a container, or with
/// [`tree_dies_with_test`].
///
/// ```no_run
/// use std::process::Command;
/// use netns_harness_suite::dies_with_test;
///
/// let mut sleeper = dies_with_test(Command::new("sleep").arg("600")).spawn()?;
/// # sleeper.kill()?; sleeper.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn dies_with_test(command: &mut Command) -> &mut Command {
    // Read before the fork: the child compares it with its parent's pid.
    let spawner = libc::pid_t::try_from(std::process::id()).expect("a pid fits in pid_t");
    // SAFETY: the closure makes only async-signal-safe system calls
    // (prctl, getppid) and allocates nothing: `from_raw_os_error` does not.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test process died between the fork and the prctl: the
            // signal will never come, so do not start at all.
            if libc::getppid() != spawner {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

/// A command for the system tool `program` (`ip`, `nft`, `tcpdump`, …)
/// that dies with the test ([`dies_with_test`]). Panics, naming the
/// package to install, if `program` is not installed ([`require`]).
///
/// ```no_run
/// let routes = netns_harness_suite::tool("ip").arg("route").output()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tool(program: &str) -> Command {
    let mut command = Command::new(require(program));
    dies_with_test(&mut command);
    command
}

/// The cargo that runs this test (`CARGO`), or the one in `PATH`. Panics,
/// naming what to install, when there is none or it does not run: the test
/// fails, it never passes without having run.
pub fn cargo() -> PathBuf {
    let cargo = require(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let version = tool(&cargo.to_string_lossy()).arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs cargo, and {} --version failed ({version:?}); install {}",
        cargo.display(),
        package_of("cargo")
    );
    cargo
}

/// A command that runs `program` (with the arguments one adds) as PID 1 of
/// a PID namespace of its own, with a fresh `/proc`, so that it and every
/// process it starts (cargo, and the compilers and test binaries cargo
/// starts) die with the test: `unshare --pid --fork --kill-child
/// --mount-proc`, where `unshare` dies with the test ([`dies_with_test`]),
/// its forked child, `program`, dies with `unshare` (`--kill-child`), and
/// the kernel kills every process of a PID namespace whose PID 1 died.
///
/// Needs root, or the test's rootless user namespace; its exit status is
/// `program`'s. Pids the processes inside print are of their namespace.
///
/// ```no_run
/// let out = netns_harness_suite::tree_dies_with_test("cargo")
///     .args(["build", "--quiet"])
///     .output()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn tree_dies_with_test(program: impl AsRef<OsStr>) -> Command {
    let program = require(program);
    let mut command = tool("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(program);
    command
}

/// What a run must leave unchanged on the host: links, addresses, routes,
/// the nftables ruleset, IPv4 forwarding and `/run/netns`, each as the
/// system tools print them.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState(Vec<(String, String)>);

impl HostState {
    /// Reads the host's state with `ip`, `nft`, `cat` (of the sysctls the
    /// harness writes in its namespaces) and `ls`.
    pub fn capture() -> Self {
        let run = |cmd: &str, args: &[&str]| {
            let out = tool(cmd)
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
            // The settings the harness writes in the lab's namespaces.
            run(
                "cat",
                &[
                    "/proc/sys/net/ipv4/ip_forward",
                    "/proc/sys/net/ipv6/conf/all/forwarding",
                    "/proc/sys/net/ipv6/conf/default/disable_ipv6",
                    "/proc/sys/net/ipv6/conf/default/accept_dad",
                    "/proc/sys/net/ipv4/conf/all/send_redirects",
                    "/proc/sys/net/ipv4/conf/default/send_redirects",
                    "/proc/sys/net/bridge/bridge-nf-call-iptables",
                    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
                    "/proc/sys/net/bridge/bridge-nf-call-arptables",
                ],
            ),
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
/// [`netns_harness::Lab::lab_netns`] or a container's) with `nsenter`.
fn nsenter(netns: BorrowedFd<'_>, program: &str, args: &[&str]) -> std::process::Output {
    let path = format!(
        "--net=/proc/{}/fd/{}",
        std::process::id(),
        netns.as_raw_fd()
    );
    tool("nsenter")
        .arg(path)
        .arg(require(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run nsenter {program}: {e}"))
}

/// Runs `f` on a thread of its own that has joined the network namespace
/// `netns` (sockets it makes stay there), and returns what `f` returns.
pub fn with_netns<T: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `netns` is an open descriptor for the duration of
                // the call; setns changes only this thread's namespace.
                let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// In a container (or on the outside host): a UDP echo server on the port
/// given as first argument; prints `listening` once bound.
pub fn udp_echo() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("a port as argument");
    let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind the echo port");
    println!("listening");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).expect("receive a datagram");
        socket.send_to(&buf[..n], from).expect("echo it");
    }
}

/// In a container: prints the verdict of [`netns_harness::stun::classify`]
/// against the STUN server given as first argument.
pub fn print_nat_behaviour() {
    let server: std::net::SocketAddr = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("a STUN server's address as argument");
    let verdict = netns_harness::stun::classify(server, Duration::from_secs(5));
    println!("{}", verdict.expect("a classification"));
}

/// Classifies `lab`'s router from a container of it against `server`:
/// whether the container succeeded, and the verdict (or what it printed).
pub fn nat_behaviour_behind(
    lab: &netns_harness::Lab,
    server: std::net::SocketAddr,
) -> (bool, String) {
    let spec = netns_harness::Spec::function(print_nat_behaviour)
        .arg(server.to_string())
        .stdout(netns_harness::Stdio::Piped)
        .stderr_to_stdout();
    let out = lab
        .spawn(&spec)
        .and_then(|mut container| container.output(Duration::from_secs(30)))
        .expect("a container that classifies");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// Runs `program` with `args` in the network namespace `netns`: whether
/// it succeeded, and its standard output followed by its standard error.
pub fn run_in_netns(netns: BorrowedFd<'_>, program: &str, args: &[&str]) -> (bool, String) {
    let out = nsenter(netns, program, args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Runs `program` with `args` in the network namespace `netns`, and
/// returns its standard output. Panics if it fails.
pub fn in_netns(netns: BorrowedFd<'_>, program: &str, args: &[&str]) -> String {
    let out = nsenter(netns, program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks the `conntrack` tool against the harness: in the lab namespace
/// `lab_netns`, `conntrack -L` lists `flow` (by its protocol and source)
/// on a line with `entry`'s original tuple and its reply tuple.
pub fn conntrack_tool_agrees(
    lab_netns: BorrowedFd<'_>,
    flow: &netns_harness::probe::Flow,
    entry: &netns_harness::conntrack::Entry,
) {
    use netns_harness::probe::Mark;
    let v6 = flow.src.is_ipv6();
    let protocol = match flow.mark {
        Mark::Icmp { .. } if v6 => "icmpv6",
        Mark::Icmp { .. } => "icmp",
        Mark::Tcp { .. } => "tcp",
        Mark::Udp { .. } => "udp",
    };
    let family = if v6 { "ipv6" } else { "ipv4" };
    let src = flow.src.to_string();
    let args = ["-L", "-f", family, "-p", protocol, "--orig-src", &src];
    let listing = in_netns(lab_netns, "conntrack", &args);
    let line = listing
        .lines()
        .find(|l| l.contains(&format!(" {} ", entry.original)))
        .unwrap_or_else(|| panic!("conntrack -L lists no {}:\n{listing}", entry.original));
    assert!(
        line.contains(&format!(" {} ", entry.reply)),
        "conntrack -L shows another reply tuple than {}: {line}",
        entry.reply
    );
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
    let out = tool("unshare")
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

/// Spawning `spec` fails with an error whose message contains `message`,
/// and the lab is left as it was: no port, and its one address still free
/// (a `ping` of the gateway from a container there succeeds). Returns the
/// error.
pub fn assert_spawn_fails(spec: netns_harness::Spec, message: &str) -> netns_harness::Error {
    use netns_harness::{Lab, Spec, Stdio};
    let lab = Lab::builder().subnet("10.94.0.0/30").build().unwrap();
    let err = lab.spawn(&spec).expect_err("the spawn should fail");
    assert!(err.to_string().contains(message), "{err}");
    assert_eq!(bridge_ports(&lab), 0, "a port was left behind by: {err}");
    // The lab's only address is free again, and usable at once.
    let mut ok = lab
        .spawn(
            &Spec::command("ping")
                .args(["-c1", "-W2", &lab.gateway().to_string()])
                .stdout(Stdio::Null),
        )
        .expect("the lab's only address is free again");
    assert!(
        ok.wait_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap()
            .success()
    );
    err
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

/// The first line of `stream` for which `wanted` is true, read on a thread
/// of its own; `None` if the stream ends first or `timeout` passes (the
/// thread then ends with the stream, e.g. when its writer is killed).
pub fn find_line(
    stream: impl Read + Send + 'static,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> Option<String> {
    let (found, waiting) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .find(|line| wanted(line));
        let _ = found.send(line);
    });
    waiting.recv_timeout(timeout).ok().flatten()
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

/// Every process whose environment has `var=value` (a mark the processes
/// a test starts inherit, and their children).
pub fn marked(var: &str, value: &str) -> Vec<u32> {
    let needle = format!("{var}={value}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
        })
        .collect()
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

/// How a test of this binary ended when run in a child process by
/// [`run_test_in_child`].
#[derive(Debug)]
pub struct ChildRun {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// From its start to its end.
    pub elapsed: Duration,
    /// Its peak resident memory, in KiB: its `VmHWM`, read every 10 ms
    /// while it ran (`ru_maxrss` would count the memory of the test process
    /// it was forked from).
    pub peak_rss_kib: u64,
    /// Its standard output and error.
    pub output: String,
}

/// Runs the test `name` of this test binary (`--exact`, ignored or not) in
/// a child process, measured from outside it. The child dies with the
/// thread that started it (`PR_SET_PDEATHSIG`); `None` if it did not end
/// within `limit` (it is then killed).
pub fn run_test_in_child(name: &str, limit: Duration) -> Option<ChildRun> {
    run_test_in_child_with(name, &[], limit)
}

/// [`run_test_in_child`] with more arguments for libtest, e.g.
/// `--nocapture` to see what a passing test printed.
pub fn run_test_in_child_with(name: &str, args: &[&str], limit: Duration) -> Option<ChildRun> {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--exact", name, "--include-ignored"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    dies_with_test(&mut command);
    let started = Instant::now();
    let mut child = command.spawn().expect("run the test binary");
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|stream| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_string(&mut text);
            }
            text
        })
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        if let Some(hwm) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            })
        {
            peak_rss_kib = peak_rss_kib.max(hwm);
        }
        if let Some(status) = child.try_wait().expect("wait for the test binary") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let output = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect();
    Some(ChildRun {
        status,
        elapsed,
        peak_rss_kib,
        output,
    })
}

/// The descriptors of the calling process, each with what it refers to
/// (`readlink` of `/proc/self/fd/N`), but the one used to list them.
pub fn open_descriptors() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .flatten()
        .filter_map(|entry| {
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .filter(|(_, target)| !target.starts_with("/proc/") || !target.ends_with("/fd"))
        .collect();
    fds.sort();
    fds
}

/// Starts `server`, a function of the test binary that prints `listening`
/// once it serves on the port given as its argument, on the outside host
/// of `net`'s lab; returns once it listens.
pub fn serve_outside(
    net: &netns_harness::Net,
    server: fn(),
    port: u16,
) -> netns_harness::Container {
    use netns_harness::{Spec, Stdio};
    let mut peer = net
        .spawn_outside(
            &Spec::function(server)
                .arg(port.to_string())
                .stdout(Stdio::Piped),
        )
        .expect("start a server on the outside host");
    let stdout = peer.take_stdout().expect("the server's piped output");
    assert_eq!(read_line(stdout), "listening");
    peer
}
