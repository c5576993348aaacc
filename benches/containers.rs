//! `cargo bench --bench containers [-- --quick]`: what containers, tests and
//! probes cost, against the walkthrough's shell-out baseline.
//!
//! Prints a table, writes a chart of setup time against the number of
//! containers alive to `target/bench/setup_vs_alive.svg`, and ends with one
//! `bench:` line of `key=value` figures to compare across commits.
//!
//! Needs root or rootless mode, and `ip` (iproute2) and `bash` for the
//! baseline; the library itself never runs them.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio as ProcessStdio};
use std::time::{Duration, Instant};

use netns_harness::probe::{ProbeOptions, Prober};
use netns_harness::{
    Conditions, Container, Direction, Fs, Lab, Network, Preset, Spec, Stack, Stdio, Topology,
};
use netns_harness_suite::{dies_with_test, tool, tree_dies_with_test};

/// Percentile `p` (0 to 100) of `samples`, which it sorts.
fn percentile(samples: &mut [f64], p: usize) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Spawns a container until it is ready (eth0 addressed, default route
/// set, program executed) and tears it down (kill, reap, port off the
/// bridge, address freed); returns the time in ms.
fn one_container(lab: &Lab, spec: &Spec) -> f64 {
    let start = Instant::now();
    drop(lab.spawn(spec).expect("spawn"));
    ms(start.elapsed())
}

/// What a container's filesystem costs, per container: each of `n`
/// rounds spawns one with [`Fs::Host`] (nothing to do), one with
/// [`Fs::Private`] and one with [`Fs::Overlay`], interleaved.
struct FsCost {
    /// p50 of each, in ms.
    host_ms: f64,
    private_ms: f64,
    overlay_ms: f64,
    /// The median of the rounds' differences to `Fs::Host`, in µs.
    private_us: f64,
    overlay_us: f64,
}

fn fs_cost(lab: &Lab, n: usize) -> FsCost {
    let host = Spec::command("sleep").arg("600").fs(Fs::Host);
    let private = host.clone().fs(Fs::Private);
    let overlay = host.clone().fs(Fs::Overlay);
    let [
        mut hosts,
        mut privates,
        mut overlays,
        mut private_diffs,
        mut overlay_diffs,
    ] = [(); 5].map(|()| Vec::with_capacity(n));
    for _ in 0..n {
        let h = one_container(lab, &host);
        let p = one_container(lab, &private);
        let o = one_container(lab, &overlay);
        hosts.push(h);
        privates.push(p);
        overlays.push(o);
        private_diffs.push((p - h) * 1e3);
        overlay_diffs.push((o - h) * 1e3);
    }
    FsCost {
        host_ms: percentile(&mut hosts, 50),
        private_ms: percentile(&mut privates, 50),
        overlay_ms: percentile(&mut overlays, 50),
        private_us: percentile(&mut private_diffs, 50),
        overlay_us: percentile(&mut overlay_diffs, 50),
    }
}

/// What IPv6 costs: `n` containers in an IPv4 lab and in a dual-stack one
/// (neither making namespaces ahead), interleaved; the p50 of each, in ms.
fn dual_stack_cost(v4: &Lab, n: usize) -> (f64, f64) {
    let dual = Lab::builder()
        .subnet("10.251.0.0/16")
        .ahead(0)
        .stack(Stack::Dual)
        .build()
        .expect("a dual-stack lab");
    let spec = Spec::command("sleep").arg("600");
    let (mut v4s, mut duals): (Vec<f64>, Vec<f64>) = (0..n)
        .map(|_| (one_container(v4, &spec), one_container(&dual, &spec)))
        .unzip();
    (percentile(&mut v4s, 50), percentile(&mut duals, 50))
}

/// What a topology costs: building one of two NATs (two networks and
/// their routers, the internet with its two public hosts and their STUN
/// responders), `builds` times (p50, ms); then `n` containers on one of
/// its networks and on the default lab `lab`, interleaved (p50 each, ms).
fn topology_cost(lab: &Lab, builds: usize, n: usize) -> (f64, f64, f64) {
    let build = || {
        let started = Instant::now();
        let topology = Topology::builder()
            .network(Network::new("a").preset(Preset::FullCone))
            .network(Network::new("b").preset(Preset::Symmetric))
            .build()
            .expect("a topology of two NATs");
        (ms(started.elapsed()), topology)
    };
    let mut times: Vec<f64> = (0..builds).map(|_| build().0).collect();
    let (_, topology) = build();
    let network = topology.network("a").expect("network a");
    let spec = Spec::command("sleep").arg("600");
    let (mut labs, mut networks): (Vec<f64>, Vec<f64>) = (0..n)
        .map(|_| (one_container(lab, &spec), one_container(&network, &spec)))
        .unzip();
    (
        percentile(&mut times, 50),
        percentile(&mut networks, 50),
        percentile(&mut labs, 50),
    )
}

/// What link conditions cost: `n` pairs of containers spawned with a rate
/// limit on their link and without, interleaved (the median of the pairs'
/// differences, in µs), and `n` changes of one running container's
/// conditions (p50, in µs): a rate (the kernel's tbf), then a latency
/// (netem, or the userspace emulator where the kernel has none: its first
/// set starts the emulator, in ms, the others change it).
fn link_cost(lab: &Lab, n: usize) -> LinkCost {
    let plain = Spec::command("sleep").arg("600");
    let rates = ["rate=10mbit", "rate=20mbit"].map(|r| r.parse::<Conditions>().unwrap());
    let shaped = plain.clone().link(rates[0].clone());
    let mut spawn_diffs: Vec<f64> = (0..n)
        .map(|_| (one_container(lab, &shaped) - one_container(lab, &plain)) * 1e3)
        .collect();
    let container = lab.spawn(&plain).expect("spawn");
    let link = container.link().expect("its link");
    let changes = |conditions: &[Conditions; 2]| -> Vec<f64> {
        (0..n)
            .map(|i| {
                let start = Instant::now();
                link.set(Direction::Out, &conditions[i % 2]).expect("set");
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    };
    let mut rate_sets = changes(&rates);
    let delays = ["latency=1ms", "latency=2ms"].map(|r| r.parse::<Conditions>().unwrap());
    link.clear().expect("clear");
    let start = Instant::now();
    link.set(Direction::Out, &delays[1]).expect("set");
    let delay_start_ms = ms(start.elapsed());
    let mut delay_sets = changes(&delays);
    LinkCost {
        spawn_us: percentile(&mut spawn_diffs, 50),
        rate_set_us: percentile(&mut rate_sets, 50),
        delay_start_ms,
        delay_set_us: percentile(&mut delay_sets, 50),
    }
}

/// What [`link_cost`] measures.
struct LinkCost {
    spawn_us: f64,
    rate_set_us: f64,
    delay_start_ms: f64,
    delay_set_us: f64,
}

/// The walkthrough done by hand: a bash, in mount and network namespaces of
/// its own (with a private `/run`, so `ip netns add` leaves nothing on the
/// host), that builds `br0` and then, for each line it reads, one container
/// with `ip` commands as the walkthrough does, tears it down, and prints the
/// milliseconds it took.
struct ShellBaseline {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next: u32,
}

const SHELL_SCRIPT: &str = r#"
set -e
mount -t tmpfs none /run
mkdir -p /run/netns
ip link set lo up
ip link add br0 type bridge
ip addr add 10.0.0.1/16 dev br0
ip link set br0 up
echo ready
while read -r i; do
  start=$EPOCHREALTIME
  ip netns add c$i
  ip netns exec c$i ip link set lo up
  ip link add v$i type veth peer eth0 netns c$i
  ip link set v$i master br0 up
  ip netns exec c$i ip addr add 10.0.$((i / 250 + 1)).$((i % 250 + 2))/16 dev eth0
  ip netns exec c$i ip link set eth0 up
  ip netns exec c$i ip route add default via 10.0.0.1
  ip netns del c$i
  end=$EPOCHREALTIME
  echo "$start $end"
done
"#;

impl ShellBaseline {
    fn start() -> ShellBaseline {
        let mut child = tool("unshare")
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "bash",
                "-c",
                SHELL_SCRIPT,
            ])
            .stdin(ProcessStdio::piped())
            .stdout(ProcessStdio::piped())
            .spawn()
            .expect("start the shell baseline (needs unshare, bash and ip)");
        let input = child.stdin.take().expect("piped");
        let mut output = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        output.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready", "the shell baseline did not start");
        ShellBaseline {
            child,
            input,
            output,
            next: 0,
        }
    }

    /// One container by hand; the time in ms, as the shell measured it.
    fn one(&mut self) -> f64 {
        writeln!(self.input, "{}", self.next).expect("write");
        self.next += 1;
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read");
        let times: Vec<f64> = line
            .split_whitespace()
            .map(|t| t.parse().expect("a time"))
            .collect();
        assert_eq!(times.len(), 2, "the shell baseline failed: {line:?}");
        (times[1] - times[0]) * 1e3
    }
}

impl Drop for ShellBaseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Memory in use on the machine, in KiB (MemTotal − MemAvailable): the
/// processes' and the kernel's (namespaces, devices, sockets) together.
fn memory_in_use_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("a meminfo field")
    };
    field("MemTotal:") - field("MemAvailable:")
}

struct Scale {
    /// Seconds to bring them all up.
    up_s: f64,
    /// ms to spawn the i-th container, with i alive.
    setup_ms: Vec<f64>,
    mem_per_container_kib: f64,
    pings_ok: usize,
    pings: usize,
}

/// `n` containers alive at once on one bridge.
fn scale(n: usize) -> Scale {
    let lab = Lab::builder().subnet("10.251.0.0/16").build().expect("lab");
    let spec = Spec::command("sleep").arg("600");
    let before = memory_in_use_kib();
    let start = Instant::now();
    let mut setup_ms = Vec::with_capacity(n);
    let containers: Vec<Container> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let c = lab.spawn(&spec).expect("spawn");
            setup_ms.push(ms(t.elapsed()));
            c
        })
        .collect();
    let up_s = start.elapsed().as_secs_f64();
    let mem_per_container_kib = memory_in_use_kib().saturating_sub(before) as f64 / n as f64;
    // A sample of pairs, spread over the whole set, each probed from its
    // source's namespace.
    let pings = 25.min(n / 2);
    let pings_ok = (0..pings)
        .filter(|i| {
            let from = &containers[i * 7919 % n];
            let to = &containers[(i * 104_729 + n / 2) % n];
            let prober = Prober::in_netns(from.netns()).expect("prober");
            from.addr() != to.addr()
                && prober
                    .icmp(to.addr(), ProbeOptions::default())
                    .expect("probe")
                    .is_reachable()
        })
        .count();
    Scale {
        up_s,
        setup_ms,
        mem_per_container_kib,
        pings_ok,
        pings,
    }
}

/// Median latencies in µs of probes from a container: ICMP to a peer, TCP
/// SYN to an open and to a closed port; and the ms a `Filtered` verdict
/// takes with the default timeout (a port that drops).
struct Probes {
    icmp_us: f64,
    tcp_open_us: f64,
    tcp_closed_us: f64,
    filtered_ms: f64,
}

fn listen_forever() {
    let listener = TcpListener::bind(("0.0.0.0", 8080)).expect("bind");
    println!("listening");
    for _ in listener.incoming() {}
}

fn probes(rounds: usize) -> Probes {
    let lab = Lab::builder().subnet("10.252.0.0/24").build().expect("lab");
    let mut server = lab
        .spawn(&Spec::function(listen_forever).stdout(Stdio::Piped))
        .expect("spawn the server");
    let mut line = String::new();
    BufReader::new(server.take_stdout().expect("piped"))
        .read_line(&mut line)
        .expect("read");
    let client = lab
        .spawn(&Spec::command("sleep").arg("600"))
        .expect("spawn the client");
    let prober = Prober::in_netns(client.netns()).expect("prober");
    let options = ProbeOptions::default();
    let time = |probe: &dyn Fn() -> bool| {
        let mut samples: Vec<f64> = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                assert!(probe(), "a probe had an unexpected outcome");
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        percentile(&mut samples, 50)
    };
    let addr = server.addr();
    let icmp_us = time(&|| prober.icmp(addr, options).expect("icmp").is_reachable());
    let tcp_open_us = time(&|| prober.tcp(addr, 8080, options).expect("tcp").is_open());
    let tcp_closed_us = time(&|| {
        matches!(
            prober.tcp(addr, 8081, options).expect("tcp"),
            netns_harness::probe::TcpOutcome::Closed { .. }
        )
    });
    // An address of the subnet nobody has: nothing answers.
    let silent = Ipv4Addr::new(10, 252, 0, 254);
    let t = Instant::now();
    let filtered = prober.tcp(silent, 8080, options).expect("tcp");
    let filtered_ms = ms(t.elapsed());
    assert!(!filtered.is_open());
    Probes {
        icmp_us,
        tcp_open_us,
        tcp_closed_us,
        filtered_ms,
    }
}

/// A crate with `n` trivial `#[test]`s and `n` trivial `#[netns_test]`s, in
/// two test targets, under `target/bench/overhead`.
fn overhead_crate(n: usize) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench/overhead");
    std::fs::create_dir_all(dir.join("tests")).expect("create the overhead crate");
    std::fs::create_dir_all(dir.join("src")).expect("create src");
    let manifest = format!(
        "[package]\nname = \"overhead\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\nnetns-harness = {{ path = {:?} }}\n\n[workspace]\n",
        root.join("harness")
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    std::fs::write(dir.join("src/lib.rs"), "").expect("write lib.rs");
    let mut plain = String::new();
    let mut netns = String::from("use netns_harness::netns_test;\n");
    for i in 0..n {
        let _ = writeln!(plain, "#[test]\nfn t{i}() {{}}");
        let _ = writeln!(netns, "#[netns_test]\nfn t{i}() {{}}");
    }
    std::fs::write(dir.join("tests/plain.rs"), plain).expect("write plain.rs");
    std::fs::write(dir.join("tests/netns.rs"), netns).expect("write netns.rs");
    dir
}

/// Wall time of `command`, which must succeed.
fn time_command(mut command: Command) -> Duration {
    let start = Instant::now();
    let out = command.output().expect("run");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

/// Per-test overhead of `#[netns_test]` over `#[test]`, in ms, under
/// libtest (the binaries `cargo test` runs, debug profile as there) and
/// under `cargo nextest run`: best of `rounds` runs of each suite, the
/// difference divided by `n`.
fn per_test_overhead(n: usize, rounds: usize) -> (f64, f64) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let dir = overhead_crate(n);
    // cargo, and the compilers and tests it starts, die with the bench.
    let cargo_in = |args: &[&str]| {
        let mut c = tree_dies_with_test(&cargo);
        c.args(args)
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", dir.join("target"));
        c
    };
    let built = cargo_in(&["test", "--no-run", "--message-format=json"])
        .output()
        .expect("build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stdout = String::from_utf8_lossy(&built.stdout);
    let binary = |name: &str| {
        let line = stdout
            .lines()
            .find(|l| {
                l.contains(&format!("\"name\":\"{name}\"")) && l.contains("\"executable\":\"")
            })
            .expect("a test binary");
        let start = line.find("\"executable\":\"").expect("executable") + "\"executable\":\"".len();
        PathBuf::from(&line[start..start + line[start..].find('"').expect("quote")])
    };
    let best = |make: &dyn Fn() -> Command| {
        (0..rounds)
            .map(|_| time_command(make()))
            .min()
            .expect("rounds")
    };
    let per_test = |netns: Duration, plain: Duration| ms(netns.saturating_sub(plain)) / n as f64;
    let (plain_bin, netns_bin) = (binary("plain"), binary("netns"));
    let test_binary = |binary: &Path| {
        let mut c = Command::new(binary);
        dies_with_test(&mut c);
        c
    };
    let libtest = per_test(
        best(&|| test_binary(&netns_bin)),
        best(&|| test_binary(&plain_bin)),
    );
    let nextest = |test: &str| {
        let mut c = cargo_in(&["nextest", "run", "--test", test]);
        c.env("NEXTEST_HIDE_PROGRESS_BAR", "1");
        c
    };
    let nextest = per_test(best(&|| nextest("netns")), best(&|| nextest("plain")));
    (libtest, nextest)
}

/// Set in copies of this benchmark that [`floor`] starts: `lab` builds a
/// lab and exits, `container` also runs one container of `true` in it,
/// `empty` exits at once.
const FLOOR_VAR: &str = "NETNS_HARNESS_BENCH_FLOOR";

/// A copy of this benchmark started by [`floor`].
fn floor_child(what: &str) {
    if what == "empty" {
        return;
    }
    let lab = Lab::builder().build().expect("lab");
    if what == "container" {
        let status = lab
            .spawn(&Spec::command("true"))
            .expect("spawn")
            .wait()
            .expect("wait");
        assert!(status.success(), "true failed: {status}");
    }
}

/// What a fresh process pays, beyond starting and exiting, for a lab (its
/// two namespaces, bridge, uplink and NAT), and for a lab and one container
/// in it: the floor under the per-test overhead of a runner that starts a
/// process per test, as nextest does. `n` processes of each kind, as many
/// at once as nextest runs on this machine (one per CPU); ms per process,
/// minus an empty process's. Most of it is the kernel's: it dismantles the
/// namespaces and devices of exited processes in the background, holding
/// the locks that the next process's setup needs.
fn floor(n: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("the benchmark's path");
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let per_process = |what: &str| {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    for _ in 0..n / workers {
                        let mut c = Command::new(&exe);
                        c.env(FLOOR_VAR, what);
                        dies_with_test(&mut c);
                        time_command(c);
                    }
                });
            }
        });
        ms(start.elapsed()) / (n / workers * workers) as f64
    };
    let empty = per_process("empty");
    (per_process("lab") - empty, per_process("container") - empty)
}

/// An SVG line chart of `ys` (ms) against their index (containers alive).
fn chart(ys: &[f64], title: &str) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let mut sorted = ys.to_vec();
    let y_max = (percentile(&mut sorted, 99) * 1.2).max(1.0);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (ys.len().max(2) - 1) as f64;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v.min(y_max) / y_max;
    let points: Vec<String> = ys
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">containers alive</text>\n\
         <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">setup ms</text>\n",
        w / 2.0,
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        w / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            pad - 4.0,
            y(v) + 4.0
        );
        let i = (ys.len().max(1) - 1) * k as usize / 4;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{i}</text>",
            x(i),
            h - pad + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1\" points=\"{}\"/>",
        points.join(" ")
    );
    svg.push_str("</svg>\n");
    svg
}

fn main() {
    if let Ok(what) = std::env::var(FLOOR_VAR) {
        floor_child(&what);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, shell_n, probe_rounds, overhead_rounds) = if quick {
        (100, 30, 100, 1)
    } else {
        (400, 100, 500, 3)
    };

    // Per container, against the shell baseline, pair by pair: with the
    // namespaces a lab makes ahead (the default), and with a lab that makes
    // each on the spot (`ahead(0)`), each followed by a shell container.
    let lab = Lab::builder().subnet("10.250.0.0/16").build().expect("lab");
    let on_the_spot = Lab::builder()
        .subnet("10.249.0.0/16")
        .ahead(0)
        .build()
        .expect("lab");
    let spec = Spec::command("sleep").arg("600");
    for _ in 0..10 {
        one_container(&lab, &spec); // warm up
        one_container(&on_the_spot, &spec);
    }
    let mut harness: Vec<f64> = (0..n).map(|_| one_container(&lab, &spec)).collect();
    let mut shell = ShellBaseline::start();
    let (mut shell_ms, mut ratios, mut spot_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..shell_n {
        let ours = one_container(&lab, &spec);
        let theirs = shell.one();
        let spot = one_container(&on_the_spot, &spec);
        let theirs_again = shell.one();
        shell_ms.extend([theirs, theirs_again]);
        ratios.push(theirs / ours);
        spot_ratios.push(theirs_again / spot);
    }
    drop(shell);
    // What a feature costs, on a lab without namespaces made ahead: which
    // of two interleaved containers gets one would be measured otherwise.
    let fs = fs_cost(&on_the_spot, n);
    let link = link_cost(&on_the_spot, n);
    let (v4_ms, dual_ms) = dual_stack_cost(&on_the_spot, n);
    let (topology_ms, topology_container_ms, lab_container_ms) = topology_cost(&lab, n / 5, n);
    drop((lab, on_the_spot));
    let (p50, p90, p99) = (
        percentile(&mut harness, 50),
        percentile(&mut harness, 90),
        percentile(&mut harness, 99),
    );
    let shell_p50 = percentile(&mut shell_ms, 50);
    let ratio = percentile(&mut ratios, 50);
    let spot_ratio = percentile(&mut spot_ratios, 50);

    let scale = scale(500);
    let chart_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&chart_dir).expect("create target/bench");
    let chart_path = chart_dir.join("setup_vs_alive.svg");
    std::fs::write(
        &chart_path,
        chart(
            &scale.setup_ms,
            "netns-harness: time to spawn a container vs containers alive",
        ),
    )
    .expect("write the chart");

    let probes = probes(probe_rounds);
    let tests = 200;
    let (overhead_libtest, overhead_nextest) = per_test_overhead(tests, overhead_rounds);
    let (floor_lab, floor_container) = floor(if quick { 100 } else { 400 });

    println!("{:<58} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99");
    println!(
        "{:<58} {p50:>8.2}ms {p90:>8.2}ms {p99:>8.2}ms",
        format!("per container, {n} one after another")
    );
    println!(
        "{:<58} {shell_p50:>8.2}ms",
        format!(
            "same with `ip` as the walkthrough, {} interleaved",
            2 * shell_n
        )
    );
    println!("{:<58} {ratio:>9.1}x", "shell / harness, median of pairs");
    println!(
        "{:<58} {spot_ratio:>9.1}x",
        "same, each namespace made on the spot (ahead(0))"
    );
    println!(
        "{:<58} {:>8.2}ms",
        format!("per container, Fs::Private (the default), {n} interleaved"),
        fs.private_ms
    );
    println!(
        "{:<58} {:>8.2}ms",
        format!("per container, Fs::Overlay, {n} interleaved"),
        fs.overlay_ms
    );
    println!(
        "{:<58} {:>8.2}ms",
        format!("per container, Fs::Host, {n} interleaved"),
        fs.host_ms
    );
    println!(
        "{:<58} {:>8.0}us",
        "Fs::Private - Fs::Host, median of rounds", fs.private_us
    );
    println!(
        "{:<58} {:>8.0}us",
        "Fs::Overlay - Fs::Host, median of rounds", fs.overlay_us
    );
    println!(
        "{:<58} {v4_ms:>8.2}ms",
        format!("per container, IPv4 lab, {n} interleaved")
    );
    println!(
        "{:<58} {dual_ms:>8.2}ms",
        format!("per container, dual-stack lab, {n} interleaved")
    );
    println!(
        "{:<58} {:>8.0}us",
        "spawn with a rate limit - without, median of pairs", link.spawn_us
    );
    println!(
        "{:<58} {:>8.0}us",
        "change a running container's rate limit, p50", link.rate_set_us
    );
    println!(
        "{:<58} {:>8.2}ms",
        "first latency on a running container", link.delay_start_ms
    );
    println!(
        "{:<58} {:>8.0}us",
        "change a running container's latency, p50", link.delay_set_us
    );
    println!(
        "{:<58} {:>9.2}s",
        "500 containers up on one bridge", scale.up_s
    );
    println!(
        "{:<58} {:>7.0}KiB",
        "memory per container (MemTotal - MemAvailable)", scale.mem_per_container_kib
    );
    println!(
        "{:<58} {:>6}/{}",
        "pings among them (sample)", scale.pings_ok, scale.pings
    );
    println!("{:<58} {:>8.0}us", "ICMP probe to a peer", probes.icmp_us);
    println!(
        "{:<58} {:>8.0}us",
        "TCP SYN probe, open port", probes.tcp_open_us
    );
    println!(
        "{:<58} {:>8.0}us",
        "TCP SYN probe, closed port", probes.tcp_closed_us
    );
    println!(
        "{:<58} {:>8.0}ms",
        "TCP probe, filtered (default 1 s timeout)", probes.filtered_ms
    );
    println!(
        "{:<58} {overhead_libtest:>8.2}ms",
        format!("#[netns_test] over #[test], {tests} tests, cargo test")
    );
    println!(
        "{:<58} {overhead_nextest:>8.2}ms",
        format!("#[netns_test] over #[test], {tests} tests, nextest")
    );
    println!(
        "{:<58} {floor_lab:>8.2}ms",
        "a fresh process with a lab, beyond an empty one"
    );
    println!(
        "{:<58} {floor_container:>8.2}ms",
        "a fresh process with a lab and a container, same"
    );
    println!(
        "{:<58} {topology_ms:>8.2}ms",
        "a topology: internet, 2 public hosts, 2 NATs"
    );
    println!(
        "{:<58} {topology_container_ms:>8.2}ms",
        "a container behind a topology's NAT"
    );
    println!(
        "{:<58} {lab_container_ms:>8.2}ms",
        "a container on the default lab, interleaved with it"
    );
    println!("chart: {}", chart_path.display());
    println!(
        "bench: per_container_ms_p50={p50:.2} per_container_ms_p90={p90:.2} per_container_ms_p99={p99:.2} \
         shell_ms_p50={shell_p50:.2} ratio_vs_shell={ratio:.1} ratio_vs_shell_on_the_spot={spot_ratio:.1} \
         per_test_overhead_ms={overhead_libtest:.2} \
         per_test_overhead_nextest_ms={overhead_nextest:.2} scale500_s={:.2} mem_per_container_kib={:.0} \
         scale500_pings_ok={}/{} icmp_probe_us_p50={:.0} tcp_probe_us_p50={:.0} tcp_closed_probe_us_p50={:.0} \
         filtered_ms={:.0} fs_private_us={:.0} fs_overlay_us={:.0} link_spawn_us={:.0} \
         link_set_us_p50={:.0} link_delay_start_ms={:.2} link_delay_set_us_p50={:.0} \
         process_lab_ms={floor_lab:.2} process_lab_container_ms={floor_container:.2} \
         v4_container_ms={v4_ms:.2} dualstack_container_ms={dual_ms:.2} \
         topology2_ms={topology_ms:.2} topology_container_ms={topology_container_ms:.2} \
         lab_container_ms={lab_container_ms:.2}",
        scale.up_s,
        scale.mem_per_container_kib,
        scale.pings_ok,
        scale.pings,
        probes.icmp_us,
        probes.tcp_open_us,
        probes.tcp_closed_us,
        probes.filtered_ms,
        fs.private_us,
        fs.overlay_us,
        link.spawn_us,
        link.rate_set_us,
        link.delay_start_ms,
        link.delay_set_us
    );
}
