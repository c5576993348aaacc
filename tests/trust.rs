//! Verdicts and isolation that hold whatever a body does: timeouts that
//! hold against a body that floods, forks and ignores signals (measured
//! from outside the test process), containers that inherit nothing but
//! their documented descriptors and default signal dispositions, spawns
//! that a stray `fork` in another thread cannot stall, and bounded memory
//! for output without end.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use netns_harness::prelude::*;
use netns_harness_suite::{needs, open_descriptors, run_test_in_child};

/// The body's timeout, and how much later its test must have ended.
const TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

fn flood(to: IpAddr) -> ! {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let payload = [0u8; 1400];
    loop {
        let _ = socket.send_to(&payload, (to, 9));
    }
}

/// Floods its link from three threads, leaves a forked shell that ignores
/// SIGTERM and SIGINT spinning, ignores SIGTERM itself: the harness must
/// still end it at its timeout.
#[netns_test(timeout = "2s")]
#[should_panic(expected = "timed out after 2s")]
fn a_body_that_floods_forks_and_ignores_signals_is_killed_at_its_timeout(net: Net) {
    // SAFETY: SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let mut spinner = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM INT; while :; do :; done"])
        .spawn()
        .unwrap();
    let gateway = net.gateway();
    for _ in 0..2 {
        std::thread::spawn(move || flood(gateway));
    }
    // Never returns: the timeout must end it, the flood and the spinner.
    std::thread::spawn(move || flood(gateway));
    let _ = spinner.wait();
    unreachable!("the spinner never ends")
}

#[test]
fn a_timed_out_test_ends_within_its_timeout_plus_two_seconds_seen_from_outside() {
    let name = "a_body_that_floods_forks_and_ignores_signals_is_killed_at_its_timeout";
    let limit = Duration::from_secs(30);
    let Some(run) = run_test_in_child(name, limit) else {
        panic!("the test process of {name} did not end within {limit:?}");
    };
    println!("the timed-out test's process ended after {:?}", run.elapsed);
    assert!(run.status.success(), "{}", run.output);
    assert!(run.output.contains("1 passed"), "{}", run.output);
    // Process start and the lab's creation take milliseconds; a second of
    // slack for a loaded machine.
    let bound = TIMEOUT + TIMEOUT_GRACE + Duration::from_secs(1);
    assert!(
        run.elapsed < bound,
        "the timed-out test ended after {:?}, not within {bound:?}: {}",
        run.elapsed,
        run.output
    );
}

/// The non-standard descriptors of this process, with what they are.
fn extra_descriptors() -> Vec<(i32, String)> {
    open_descriptors()
        .into_iter()
        .filter(|(fd, _)| *fd > 2)
        .collect()
}

fn socket_domain(fd: i32) -> i32 {
    let mut domain: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes an int into `domain`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        )
    };
    assert_eq!(ret, 0, "SO_DOMAIN of descriptor {fd}");
    domain
}

fn close_on_exec(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
}

/// What `ls -l /proc/self/fd` run in a peer shows beyond the standard
/// streams and the directory it lists.
fn peer_extra_descriptors(spawn: impl FnOnce(&Spec) -> Container) -> Vec<String> {
    let mut peer = spawn(
        &Spec::command("ls")
            .args(["-l", "/proc/self/fd/"])
            .stdout(Stdio::Piped),
    );
    let out = peer.output(Duration::from_secs(10)).unwrap();
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let extra: Vec<String> = listing
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(head, target)| {
            let fd: i32 = head.rsplit(' ').next().unwrap().parse().unwrap();
            fd > 2 && !(target.starts_with("/proc/") && target.ends_with("/fd"))
        })
        .map(|(head, target)| format!("{} -> {target}", head.rsplit(' ').next().unwrap()))
        .collect();
    assert!(listing.contains(" 1 -> pipe:"), "{listing}");
    extra
}

/// A body holds its standard streams and, close-on-exec, the harness's
/// four: the lab's and the outside's namespaces, the pipe its result goes
/// to, and a netlink socket in the lab's namespace. Nothing else: not the
/// capture of its port that the runner keeps (an AF_PACKET socket), nor
/// any socket or pipe of another test. Its peers get only their streams.
#[netns_test]
fn a_body_and_its_peers_hold_only_their_documented_descriptors(net: Net) {
    let extra = extra_descriptors();
    let kinds: Vec<&str> = extra
        .iter()
        .map(|(fd, target)| {
            assert!(
                close_on_exec(*fd),
                "descriptor {fd} -> {target} is inherited by children"
            );
            match target.split(':').next().unwrap() {
                "socket" => {
                    assert_eq!(
                        socket_domain(*fd),
                        libc::AF_NETLINK,
                        "descriptor {fd}: a socket the harness does not document: {extra:?}"
                    );
                    "netlink"
                }
                "net" => "netns",
                "pipe" => "pipe",
                other => panic!("descriptor {fd} -> {target} ({other}): {extra:?}"),
            }
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["netlink", "netns", "netns", "pipe"], "{extra:?}");
    let extra = peer_extra_descriptors(|spec| net.spawn(spec).unwrap());
    assert!(extra.is_empty(), "a peer inherited {extra:?}");
}

/// Opens, without close-on-exec, what careless code in a test process
/// leaves open: a socket and a pipe.
fn careless_descriptors() -> [OwnedFd; 3] {
    // SAFETY: socket and pipe take no pointer but the pipe's array.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(raw >= 0, "open a UDP socket");
        let mut pipe = [0; 2];
        assert_eq!(libc::pipe(pipe.as_mut_ptr()), 0, "open a pipe");
        [raw, pipe[0], pipe[1]].map(|fd| OwnedFd::from_raw_fd(fd))
    }
}

#[test]
fn a_container_inherits_nothing_of_the_test_process_but_its_streams() {
    let lab = Lab::shared().unwrap();
    let careless = careless_descriptors();
    // A capture and a probe of "another test", open meanwhile.
    let capture = lab.capture_outside().unwrap();
    let prober = netns_harness::probe::Prober::in_netns(lab.outside_netns()).unwrap();
    let extra = std::thread::scope(|scope| {
        let probing = scope.spawn(|| {
            prober.icmp(
                lab.public_addr(),
                netns_harness::probe::ProbeOptions::default()
                    .count(10)
                    .interval(Duration::from_millis(20)),
            )
        });
        let extra = peer_extra_descriptors(|spec| lab.spawn(spec).unwrap());
        probing.join().unwrap().unwrap();
        extra
    });
    let listed: Vec<i32> = careless.iter().map(AsRawFd::as_raw_fd).collect();
    assert!(
        extra.is_empty(),
        "the container inherited {extra:?} (the test process left {listed:?} inheritable)"
    );
    drop(capture.stop());
}

#[test]
fn a_container_starts_with_default_signal_dispositions_and_an_empty_mask() {
    // SAFETY: SIG_IGN installs no handler; the previous disposition is
    // restored below.
    let previous = unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
    let lab = Lab::shared().unwrap();
    let mut container = lab
        .spawn(
            &Spec::command("grep")
                .args(["-E", "^Sig(Ign|Blk)", "/proc/self/status"])
                .stdout(Stdio::Piped),
        )
        .unwrap();
    let out = container.output(Duration::from_secs(10)).unwrap();
    // SAFETY: restores what `signal` returned.
    unsafe { libc::signal(libc::SIGUSR2, previous) };
    let status = String::from_utf8_lossy(&out.stdout);
    for line in status.lines() {
        let (what, mask) = line.split_once(':').unwrap();
        assert_eq!(
            mask.trim(),
            "0000000000000000",
            "{what} in the container: {status}"
        );
    }
    assert_eq!(status.lines().count(), 2, "{status}");
}

/// Forks (without exec) children that sleep for `seconds`, as a library
/// on another thread might, each holding copies of every descriptor of the
/// moment; returns their pids.
fn stray_forks(count: usize, seconds: u32) -> Vec<libc::pid_t> {
    (0..count)
        .map(|_| {
            // SAFETY: the child only makes async-signal-safe calls
            // (prctl, sleep, _exit) before it exits.
            unsafe {
                let pid = libc::fork();
                if pid == 0 {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    libc::sleep(seconds);
                    libc::_exit(0);
                }
                assert!(pid > 0, "fork");
                std::thread::sleep(Duration::from_millis(2));
                pid
            }
        })
        .collect()
}

#[test]
fn a_stray_fork_in_another_thread_does_not_stall_spawns() {
    let lab = Lab::shared().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let longest = std::thread::scope(|scope| {
        let forker = scope.spawn(|| {
            let mut pids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pids.extend(stray_forks(1, 60));
            }
            pids
        });
        let mut longest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let mut container = lab.spawn(&Spec::command("true")).unwrap();
            longest = longest.max(started.elapsed());
            container.wait_timeout(Duration::from_secs(10)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for pid in forker.join().unwrap() {
            // SAFETY: signals and reaps our own forked children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        longest
    });
    println!("longest spawn among stray forks: {longest:?}");
    // The forks hold copies of every pipe for 60 s: a spawn that waited for
    // a pipe's last writer would take that long (or the 30 s setup timeout).
    assert!(
        longest < Duration::from_secs(10),
        "a spawn took {longest:?}"
    );
}

/// Writes a gigabyte without a newline to its standard output, which the
/// runner forwards to libtest.
#[netns_test(timeout = "120s")]
fn a_body_writes_a_gigabyte_without_a_newline() {
    use std::io::Write;
    let block = vec![b'x'; 1 << 20];
    let mut out = std::io::stdout().lock();
    for _ in 0..1024 {
        out.write_all(&block).unwrap();
    }
}

#[test]
fn a_gigabyte_of_output_costs_the_test_process_a_few_mebibytes() {
    let limit = Duration::from_secs(120);
    let run = |name| {
        let run = run_test_in_child(name, limit).expect("it ended");
        println!("{name}: peak RSS {} KiB", run.peak_rss_kib);
        assert!(run.status.success(), "{name}: {}", run.output);
        assert!(run.output.contains("1 passed"), "{name}: {}", run.output);
        run
    };
    // The same binary with a container and a small output.
    let baseline = run("a_container_writes_a_kilobyte_for_output").peak_rss_kib;
    for name in [
        "a_body_writes_a_gigabyte_without_a_newline",
        "a_container_writes_a_gigabyte_for_output",
    ] {
        // What is kept: 1 MiB forwarded (held by libtest's capture, and
        // copied once when the test ends), or 4 MiB kept by `output`.
        let grown = run(name).peak_rss_kib.saturating_sub(baseline);
        assert!(
            grown < 8 * 1024,
            "{name}: grew by {grown} KiB over {baseline} KiB"
        );
    }
}

fn write_for_output(size: &str) -> std::process::Output {
    Lab::shared()
        .unwrap()
        .spawn(
            &Spec::command("head")
                .args(["-c", size, "/dev/zero"])
                .stdout(Stdio::Piped),
        )
        .unwrap()
        .output(Duration::from_secs(120))
        .unwrap()
}

#[test]
fn a_container_writes_a_kilobyte_for_output() {
    let out = write_for_output("1K");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), 1024);
    // The baseline of the memory test above: its peak is sampled every
    // 10 ms from outside, so it must live past its peak for a few samples.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_container_writes_a_gigabyte_for_output() {
    let out = write_for_output("1G");
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.len(), netns_harness::OUTPUT_LIMIT);
}

fn visible_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count()
}

/// A body is root only in its test's user namespace: its `/proc` can be
/// neither unmounted (to see the host's processes, and through their
/// `/proc/<pid>/ns/*` the host's namespaces) nor replaced, and the host's
/// state is unchanged, whether the test process is root or rootless.
#[netns_test]
fn a_body_cannot_unmount_its_proc_nor_mount_another() {
    let before = visible_processes();
    // SAFETY: umount2 and mount take valid NUL-terminated strings.
    let (unmounted, mounted) = unsafe {
        (
            libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH),
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            ),
        )
    };
    let after = visible_processes();
    assert_eq!(
        after, before,
        "after umount ({unmounted}) and mount ({mounted}) of /proc the body sees {after} processes, not its {before}"
    );
    assert!(before < 10, "the body sees {before} processes");
    assert_eq!(unmounted, -1, "the body unmounted its /proc");
    assert_eq!(mounted, -1, "the body mounted a /proc");
}

#[needs("ip", "nft")]
#[test]
fn containers_run_in_a_user_namespace_of_the_lab_not_the_test_process() {
    let before = netns_harness_suite::HostState::capture();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let lab = Lab::shared().unwrap();
    let out = lab
        .spawn(
            &Spec::command("readlink")
                .arg("/proc/self/ns/user")
                .stdout(Stdio::Piped),
        )
        .unwrap()
        .output(Duration::from_secs(10))
        .unwrap();
    let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(theirs.starts_with("user:["), "{theirs:?}");
    assert_ne!(
        theirs,
        own.to_string_lossy(),
        "the container shares the test process's user namespace"
    );
    let result = run_test_in_child(
        "a_body_cannot_unmount_its_proc_nor_mount_another",
        Duration::from_secs(60),
    )
    .expect("it ended");
    assert!(result.status.success(), "{}", result.output);
    assert!(result.output.contains("1 passed"), "{}", result.output);
    before.assert_unchanged(&netns_harness_suite::HostState::capture());
}
