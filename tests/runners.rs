//! `#[netns_test]` under the real runners: `cargo test` and
//! `cargo nextest run` on the fixture crate in tests/fixture, whose tests
//! pass, fail, time out and coordinate on purpose. Checks the counts and
//! the output users see.
//!
//! These tests need cargo (they build the fixture), cargo-nextest, root (or
//! rootless mode) and `unshare`: cargo and everything it starts run in a
//! PID namespace that dies with the test ([`tree_dies_with_test`]). Where
//! cargo cannot run they fail, naming what to install; a runner that has no
//! cargo must leave this binary out (as the unprivileged pass of `.ci/run`
//! does), never count these tests as passed.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use netns_harness_suite::{
    cargo, dies_with_test, eventually, namespace_holders, needs, require, tool, tree_dies_with_test,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The 13 tests of the fixture, 1 of them ignored by default.
const FIXTURE_TESTS: [&str; 13] = [
    "counts_its_runs",
    "fails_loudly",
    "ignored_by_default",
    "isolation_a",
    "isolation_b",
    "names_its_crate",
    "passes_quietly",
    "probe_from_private",
    "probe_from_shared",
    "returns_err",
    "shared_target",
    "should_panic_composes",
    "times_out",
];

/// The fixture tests that wait for each other, so must run together.
const COORDINATED: [&str; 5] = [
    "isolation_a",
    "isolation_b",
    "shared_target",
    "probe_from_private",
    "probe_from_shared",
];

/// `cargo` with `subcommand` on the fixture crate, in a PID namespace that
/// dies with the test, with everything cargo starts.
fn fixture_command(cargo: &Path, subcommand: &[&str]) -> Command {
    let mut command = tree_dies_with_test(cargo);
    command
        .args(subcommand)
        .arg("--manifest-path")
        .arg(Path::new(ROOT).join("tests/fixture/Cargo.toml"))
        .env("CARGO_TARGET_DIR", Path::new(ROOT).join("target/fixture"))
        .env("RUST_BACKTRACE", "0");
    command
}

/// The fixture's test binary, built once.
fn fixture_binary(cargo: &Path) -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let out = fixture_command(
            cargo,
            &[
                "test",
                "--no-run",
                "--message-format=json",
                "--test",
                "fixture",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("\"executable\":\"") && l.contains("\"name\":\"fixture\""))
            .expect("the fixture's test binary");
        let start = line.find("\"executable\":\"").unwrap() + "\"executable\":\"".len();
        let end = start + line[start..].find('"').unwrap();
        PathBuf::from(&line[start..end])
    })
}

/// A run of the fixture: its output, and the directory its tests shared.
struct Run {
    out: Output,
    dir: tempfile::TempDir,
}

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn text(&self) -> String {
        self.stdout() + &String::from_utf8_lossy(&self.out.stderr)
    }

    fn shared(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

fn run(mut command: Command) -> Run {
    let dir = shared_dir();
    let out = command.env("FIXTURE_DIR", dir.path()).output().unwrap();
    Run { out, dir }
}

/// libtest's counts: (passed, failed, ignored, filtered out).
fn libtest_counts(stdout: &str) -> (u32, u32, u32, u32) {
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with("test result:"))
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let count = |what: &str| {
        line.split(';')
            .find(|part| part.trim_end().ends_with(what))
            .and_then(|part| part.split_whitespace().rev().nth(what.split(' ').count()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {what} in {line:?}"))
    };
    (
        count("passed"),
        count("failed"),
        count("ignored"),
        count("filtered out"),
    )
}

/// The `---- name stdout ----` section libtest prints for a failure.
fn failure_section<'a>(stdout: &'a str, name: &str) -> &'a str {
    let header = format!("---- {name} stdout ----");
    let start = stdout
        .find(&header)
        .unwrap_or_else(|| panic!("no {header} in:\n{stdout}"));
    let rest = &stdout[start + header.len()..];
    &rest[..rest
        .find("\n---- ")
        .or_else(|| rest.find("\nfailures:"))
        .unwrap_or(rest.len())]
}

fn assert_in_order(text: &str, parts: &[&str]) {
    let mut at = 0;
    for part in parts {
        let found = text[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} missing or out of order in:\n{text}"));
        at += found + part.len();
    }
}

/// What every full run of the fixture must show, whichever runner ran it:
/// all tests in one process (cargo test) or each in its own (nextest,
/// whose processes use the labs of the run's keeper), the shared lab is
/// the same for all.
fn assert_fixture_semantics(run: &Run) {
    let text = run.text();
    // Output of passing tests stays hidden; failing tests show theirs, stdout
    // and stderr in the order they were written, with the panic's message.
    assert!(
        !text.contains("PASSING-OUTPUT"),
        "a passing test's output was shown:\n{text}"
    );
    // A body's own tracing subscriber writes there too: its events, and the
    // harness's (the peer it spawned), come in order with its prints.
    assert_in_order(
        &text,
        &[
            "FAILING-TRACING-EVENT",
            "container spawned",
            "helper",
            "FAILING-STDOUT-1",
            "FAILING-STDERR-2",
            "FAILING-STDOUT-3",
            "FIXTURE-PANIC",
        ],
    );
    assert!(
        text.contains("tests/fixture.rs:37:5"),
        "the panic's location is missing:\n{text}"
    );
    assert!(
        text.contains("returned an error: \"FIXTURE-ERR\""),
        "{text}"
    );
    assert!(
        text.contains(
            "test times_out timed out after 1s; its container and every process in it were killed"
        ),
        "{text}"
    );
    // Nothing the timed-out test started survives it.
    let identities: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("IDENTITY net:["))
        .map(|l| l.trim_end_matches(']').parse().unwrap())
        .collect();
    assert_eq!(identities.len(), 3, "{text}");
    for ns in identities {
        assert!(
            eventually(Duration::from_secs(10), || namespace_holders(ns).is_empty()),
            "namespace {ns} of the timed-out test survives in {:?}",
            namespace_holders(ns)
        );
    }
    // The body ran exactly once.
    assert_eq!(run.shared("runs"), "ran\n");
    // Two tests at the same time: different hostnames, network and PID
    // namespaces, each its own PID 1; on one lab, different addresses.
    let a: Vec<String> = run
        .shared("isolation_a")
        .split(' ')
        .map(str::to_owned)
        .collect();
    let b: Vec<String> = run
        .shared("isolation_b")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!((a.len(), b.len()), (5, 5), "{a:?} {b:?}");
    assert_eq!(
        (a[0].as_str(), b[0].as_str()),
        ("isolation_a", "isolation_b")
    );
    assert_eq!((a[2].as_str(), b[2].as_str()), ("1", "1"));
    assert_ne!(a[3], b[3], "same PID namespace");
    assert_ne!(a[4], b[4], "same network namespace");
    assert_ne!(a[1], b[1], "same address on one bridge");
    // A private network never reaches a peer of another test; the same
    // probe from the shared bridge does.
    assert_eq!(run.shared("probed_from_private"), "unreachable");
    assert_eq!(run.shared("probed_from_shared"), "reachable");
}

/// Where the fixture's failure artifacts go under `cargo test`:
/// `<target>/netns-harness/<package>/<binary>/<test>`.
fn artifacts(test: &str) -> PathBuf {
    Path::new(ROOT)
        .join("target/fixture/netns-harness/netns-harness-fixture/fixture")
        .join(test)
}

/// The failure report of `fails_loudly` (state of its container, its lab,
/// its peer) and its capture, which tcpdump reads.
fn assert_failure_report(text: &str) {
    assert_in_order(
        text,
        &[
            "--- netns-harness report for fails_loudly ---",
            "container fails_loudly (10.",
            "link eth0 UP 02:00:",
            "route default via 10.200.0.1 dev eth0",
            "neigh 10.200.0.1 dev eth0 lladdr",
            "lab 10.200.0.0/16 (gateway 10.200.0.1, NAT as 198.18.0.1):",
            "port v",
            "nat: ip saddr 10.200.0.0/16 oifname \"uplink\" masquerade:",
            "peers:",
            "helper 10.200.",
            "capture of v",
        ],
    );
    // Where the report says the pcap is: in the test's directory, below
    // `nextest-<run>-<attempt>/` when this suite itself runs under nextest.
    let pcap = text
        .lines()
        .find_map(|l| l.split_once(" in ")?.1.strip_suffix(" (tcpdump -nr it)"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no capture path in the report: {text}"));
    assert!(
        pcap.starts_with(artifacts("fails_loudly")),
        "{}",
        pcap.display()
    );
    assert!(pcap.ends_with("capture.pcap"), "{}", pcap.display());
    let out = tool("tcpdump").arg("-nr").arg(&pcap).output().unwrap();
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpdump cannot read {}",
        pcap.display()
    );
    assert!(dump.contains("> 10.200.0.1: ICMP echo request"), "{dump}");
    let report = std::fs::read_to_string(pcap.with_file_name("report.txt")).unwrap();
    assert!(
        report.contains("route default via 10.200.0.1 dev eth0"),
        "{report}"
    );
    // Passing tests leave nothing.
    assert!(!artifacts("passes_quietly").exists());
}

#[needs("unshare", "ping", "tcpdump")]
#[test]
fn cargo_test_counts_outcomes_and_shows_output_only_for_failures() {
    let cargo = cargo();
    let _ = std::fs::remove_dir_all(Path::new(ROOT).join("target/fixture/netns-harness"));
    let run = run({
        let mut c = fixture_command(&cargo, &["test", "--test", "fixture"]);
        c.args(["--", "--test-threads=16"]);
        c
    });
    let stdout = run.stdout();
    assert_eq!(libtest_counts(&stdout), (9, 3, 1, 0), "{stdout}");
    for failed in ["fails_loudly", "returns_err", "times_out"] {
        assert!(
            stdout.contains(&format!("test {failed} ... FAILED")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("test should_panic_composes - should panic ... ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("test ignored_by_default ... ignored, runs only with --ignored"),
        "{stdout}"
    );
    assert_in_order(
        failure_section(&stdout, "fails_loudly"),
        &[
            "FAILING-STDOUT-1",
            "FAILING-STDERR-2",
            "FAILING-STDOUT-3",
            "thread 'fails_loudly'",
        ],
    );
    assert!(!run.text().contains("IGNORED-RAN"));
    assert_fixture_semantics(&run);
    assert_failure_report(failure_section(&stdout, "fails_loudly"));
    // The timed-out test's report says what became of its peers.
    let timed_out = failure_section(&stdout, "times_out");
    assert!(
        timed_out.contains("(killed with the container at the timeout)"),
        "{timed_out}"
    );
}

#[needs("unshare", "ping")]
#[test]
fn libtest_flags_work_as_with_plain_tests() {
    let cargo = cargo();
    let binary = fixture_binary(&cargo);
    let fixture = |args: &[&str]| {
        let mut c = Command::new(binary);
        dies_with_test(&mut c).args(args).env("RUST_BACKTRACE", "0");
        run(c)
    };

    // --list names every test and runs none.
    let list = fixture(&["--list"]);
    let listed: BTreeSet<&str> = list
        .out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok()?.strip_suffix(": test"))
        .collect();
    assert_eq!(listed, FIXTURE_TESTS.into_iter().collect());
    assert_eq!(list.shared("runs"), "");

    // A name filter, --exact, --show-output.
    let one = fixture(&["passes_quietly", "--exact", "--show-output"]);
    assert_eq!(libtest_counts(&one.stdout()), (1, 0, 0, 12));
    assert!(
        one.stdout()
            .contains("---- passes_quietly stdout ----\nPASSING-OUTPUT"),
        "{}",
        one.stdout()
    );

    // --nocapture shows a passing test's output live.
    let live = fixture(&["passes_quietly", "--exact", "--nocapture"]);
    assert!(
        live.stdout().contains("PASSING-OUTPUT"),
        "{}",
        live.stdout()
    );

    // Several filters, --skip, --test-threads, a flag the harness does not know of.
    let some = fixture(&[
        "passes_quietly",
        "counts_its_runs",
        "should_panic",
        "ignored",
        "--skip",
        "counts",
        "--test-threads=1",
        "--format=terse",
    ]);
    // passes_quietly and should_panic_composes run; ignored_by_default is ignored.
    assert_eq!(
        libtest_counts(&some.stdout()),
        (2, 0, 1, 10),
        "{}",
        some.stdout()
    );
    assert_eq!(some.shared("runs"), "", "a skipped test ran");

    // --ignored runs only the ignored test; --include-ignored runs it too.
    let ignored = fixture(&["--ignored", "--nocapture"]);
    assert_eq!(libtest_counts(&ignored.stdout()), (1, 0, 0, 12));
    assert!(ignored.stdout().contains("IGNORED-RAN"));
    let included = fixture(&["ignored_by_default", "passes_quietly", "--include-ignored"]);
    assert_eq!(libtest_counts(&included.stdout()), (2, 0, 0, 11));
}

#[needs("unshare")]
#[test]
fn unsupported_machines_fail_with_the_fix_or_skip_visibly_on_request() {
    let cargo = cargo();
    let binary = fixture_binary(&cargo);
    // Not root, and no rootless mode: `unshare` makes the fixture uid 65534
    // without capabilities.
    let unprivileged = |skip: bool| {
        let mut c = tool("unshare");
        c.args(["--user", "--map-user=65534", "--map-group=65534"])
            .arg(binary)
            .args(["passes_quietly", "--exact"])
            .env(netns_harness::ROOTLESS_VAR, "0")
            .env("RUST_BACKTRACE", "0");
        if skip {
            c.env(netns_harness::SKIP_VAR, "1");
        }
        run(c)
    };
    let failed = unprivileged(false);
    assert!(!failed.out.status.success());
    let text = failed.text();
    assert!(
        text.contains("cannot run passes_quietly in a container: cannot create network namespaces"),
        "{text}"
    );
    assert!(
        text.contains("fix: unset NETNS_HARNESS_ROOTLESS, or run the tests as root"),
        "{text}"
    );
    assert!(
        text.contains("or set NETNS_HARNESS_SKIP_UNSUPPORTED=1"),
        "{text}"
    );

    let skipped = unprivileged(true);
    assert!(skipped.out.status.success(), "{}", skipped.text());
    assert_eq!(libtest_counts(&skipped.stdout()), (1, 0, 0, 12));
    let stderr = String::from_utf8_lossy(&skipped.out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("skipped")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "netns-harness: skipped passes_quietly (NETNS_HARNESS_SKIP_UNSUPPORTED=1):"
        ),
        "{stderr}"
    );
    assert!(!skipped.text().contains("PASSING-OUTPUT"), "the body ran");
}

/// The test names nextest reports as run, from its `PASS`/`FAIL` lines
/// (those before the summary, which lists failures again).
fn nextest_ran(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("Summary ["))
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("TIMEOUT ")
        })
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

#[needs("cargo-nextest", "unshare", "ping")]
#[test]
fn nextest_runs_every_test_in_its_own_process_and_partitions_cover_all() {
    let cargo = cargo();
    require("cargo-nextest");
    let run = run({
        let mut c = fixture_command(
            &cargo,
            &["nextest", "run", "--no-fail-fast", "--test-threads=16"],
        );
        c.env("NEXTEST_HIDE_PROGRESS_BAR", "1");
        c
    });
    let text = run.text();
    assert!(
        text.contains("12 tests run: 9 passed, 3 failed, 1 skipped"),
        "unexpected nextest summary:\n{text}"
    );
    assert_fixture_semantics(&run);
    // The timed-out test failed after about its 1 s timeout, not its 600 s sleep.
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("FAIL") && l.ends_with(" times_out"))
        .unwrap_or_else(|| panic!("no FAIL line for times_out in:\n{text}"));
    let seconds: f64 = line
        .split(['[', ']'])
        .nth(1)
        .and_then(|t| t.trim().trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no duration in {line:?}"));
    assert!((1.0..10.0).contains(&seconds), "{line}");

    // Two partitions together run every test exactly once (the coordinated
    // tests wait for each other, so they are left out here).
    let mut seen = Vec::new();
    for part in ["hash:1/2", "hash:2/2"] {
        let filter = format!(
            "not ({})",
            COORDINATED.map(|t| format!("test(={t})")).join(" | ")
        );
        let mut c = fixture_command(
            &cargo,
            &["nextest", "run", "--no-fail-fast", "--run-ignored=all"],
        );
        c.args(["--partition", part, "-E", &filter]);
        let ran = nextest_ran(&run_text(c));
        assert!(!ran.is_empty(), "partition {part} ran nothing");
        seen.extend(ran);
    }
    seen.sort();
    let expected: Vec<String> = FIXTURE_TESTS
        .into_iter()
        .filter(|t| !COORDINATED.contains(t))
        .map(str::to_owned)
        .collect();
    assert_eq!(seen, expected);
}

fn run_text(command: Command) -> String {
    run(command).text()
}

#[needs("unshare", "ping", "nsenter", "ip", "nft")]
#[test]
fn a_failed_test_is_kept_for_inspection_until_enter() {
    use std::io::{BufRead, BufReader};
    let cargo = cargo();
    let binary = fixture_binary(&cargo);
    let dir = shared_dir();
    let mut child = dies_with_test(
        Command::new(binary)
            .args(["fails_loudly", "--exact"])
            .env(netns_harness::KEEP_VAR, "1")
            .env(netns_harness::KEEP_SECONDS_VAR, "120")
            .env("FIXTURE_DIR", dir.path())
            .env("RUST_BACKTRACE", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no keep message: {said:?}"
        );
        let done = line.starts_with("press Enter");
        said.push(line);
        if done {
            break;
        }
    }
    // The printed commands enter the kept container and lab.
    let command = |what: &str| -> Vec<String> {
        let line = said
            .iter()
            .find(|l| l.trim_start().starts_with(what))
            .unwrap_or_else(|| panic!("{said:?}"));
        line.split_once(":  ")
            .unwrap()
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let enter = |what: &str, program: &[&str]| {
        let cmd = command(what);
        let out = tool(&cmd[0])
            .args(&cmd[1..])
            .args(program)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} {program:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addrs = enter(
        "its container:",
        &["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
    );
    assert!(addrs.contains("inet 10.200."), "{addrs}");
    let hostname = enter("its container:", &["cat", "/proc/sys/kernel/hostname"]);
    assert_eq!(hostname.trim(), "fails_loudly");
    let ruleset = enter("the lab", &["nft", "list", "ruleset"]);
    assert!(ruleset.contains("masquerade"), "{ruleset}");
    let container_cmd = command("its container:");
    let pid = &container_cmd[container_cmd.iter().position(|a| a == "--target").unwrap() + 1];
    let netns: u64 = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap();

    // Enter tears it all down.
    writeln!(child.stdin.take().unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("helper 10.200."), "{stdout}");
    assert!(
        eventually(Duration::from_secs(10), || namespace_holders(netns)
            .is_empty()),
        "the kept container outlived Enter: {:?}",
        namespace_holders(netns)
    );
}

/// A directory the fixture's containers share with this test: under the
/// fixture's target directory (its `CARGO_TARGET_DIR`, which containers
/// share), since a container's `/tmp` is its own — and this checkout may
/// itself lie below `/tmp`.
fn shared_dir() -> tempfile::TempDir {
    let target = Path::new(ROOT).join("target/fixture");
    std::fs::create_dir_all(&target).unwrap();
    tempfile::tempdir_in(target).unwrap()
}
