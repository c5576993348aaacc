//! SIGKILL at many instants of a lab's and its containers' lives: building
//! the lab, cloning, configuring, probing, tearing down. Each time, nothing
//! of the killed process remains: no process, interface, namespace or
//! mount, and the host's network state is unchanged. The same for the
//! helper processes the suite's own tests start (tools, cargo and what it
//! starts).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use netns_harness::probe::{ProbeOptions, Prober};
use netns_harness::{Lab, Spec};
use netns_harness_suite::{
    HostState, dies_with_test, eventually, find_line, needs, process_alive, tool,
    tree_dies_with_test,
};

const MARK_VAR: &str = "NETNS_HARNESS_SUITE_CHAOS";
const KILLS: u64 = 20;
const GONE_WITHIN: Duration = Duration::from_secs(10);
const STARTS_WITHIN: Duration = Duration::from_secs(30);

/// Every process whose environment carries `mark`.
fn marked(mark: &str) -> Vec<u32> {
    netns_harness_suite::marked(MARK_VAR, mark)
}

/// `pids`, each with its command line, for messages.
fn described(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid} ({})",
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim_end()
            )
        })
        .collect()
}

/// Starts the test `name` of this binary, marked with `mark`, and waits
/// until it prints a line starting with `ready`, which it returns.
fn start_victim(name: &str, mark: &str, ready: &'static str) -> (Child, String) {
    let mut victim = dies_with_test(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--nocapture"])
            .env(MARK_VAR, mark)
            .stdout(Stdio::piped()),
    )
    .spawn()
    .unwrap();
    let stdout = victim.stdout.take().unwrap();
    let Some(line) = find_line(stdout, STARTS_WITHIN, move |l| l.starts_with(ready)) else {
        victim.kill().unwrap();
        victim.wait().unwrap();
        panic!("the victim {name} did not say {ready:?} within {STARTS_WITHIN:?}");
    };
    (victim, line)
}

fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Cycles through a lab's whole life until killed.
#[test]
#[ignore = "a child process of sigkill_at_twenty_instants_leaves_nothing"]
fn chaos_victim() {
    println!("started");
    loop {
        let lab = Lab::builder().subnet("10.97.0.0/24").build().unwrap();
        let a = lab.spawn(&Spec::command("sleep").arg("600")).unwrap();
        let b = lab.spawn(&Spec::command("sleep").arg("600")).unwrap();
        let outside = lab
            .spawn_outside(&Spec::command("sleep").arg("600"))
            .unwrap();
        let prober = Prober::in_netns(a.netns()).unwrap();
        assert!(
            prober
                .icmp(b.addr(), ProbeOptions::default())
                .unwrap()
                .is_reachable()
        );
        assert!(
            prober
                .icmp(lab.outside_addr(), ProbeOptions::default())
                .unwrap()
                .is_reachable()
        );
        drop((a, b, outside, lab));
    }
}

#[needs("ip", "nft")]
#[test]
fn sigkill_at_twenty_instants_leaves_nothing() {
    let host = HostState::capture();
    let mount_table = mounts();
    for kill in 0..KILLS {
        let mark = format!("{}-{kill}", std::process::id());
        let (mut victim, _) = start_victim("chaos_victim", &mark, "started");
        // Instants spread over a few cycles of the victim's loop.
        std::thread::sleep(Duration::from_millis(kill * 17));
        victim.kill().unwrap();
        victim.wait().unwrap();
        assert!(
            eventually(GONE_WITHIN, || marked(&mark).is_empty()),
            "kill {kill} at {} ms: processes survive: {:?}",
            kill * 17,
            described(&marked(&mark))
        );
        assert_eq!(
            mounts(),
            mount_table,
            "kill {kill}: the mount table changed"
        );
        HostState::capture().assert_unchanged(&host);
    }
}

/// Starts one process of each kind the suite's tests start besides
/// containers: a tool ([`tool`]), and a program that starts processes of
/// its own ([`tree_dies_with_test`]: a shell with two `sleep`s, as cargo
/// with its compilers and test binaries); and a container. Says "helpers"
/// with their pids once all run, then waits to be killed. Run alone, it
/// ends them itself.
#[test]
#[ignore = "a child process of sigkill_leaves_no_helper_of_the_test"]
fn helpers_victim() {
    let mut sleeper = tool("sleep").arg("600").spawn().unwrap();
    let mut tree = tree_dies_with_test("sh")
        .args(["-c", "sleep 600 & sleep 600 & echo started; wait"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = find_line(tree.stdout.take().unwrap(), STARTS_WITHIN, |l| {
        l == "started"
    });
    assert!(
        started.is_some(),
        "the shell in its PID namespace did not start"
    );
    let lab = Lab::builder().subnet("10.89.0.0/24").build().unwrap();
    let container = lab.spawn(&Spec::command("sleep").arg("600")).unwrap();
    println!("helpers {} {} {}", sleeper.id(), tree.id(), container.pid());
    if std::env::var_os(MARK_VAR).is_some() {
        loop {
            std::thread::park();
        }
    }
    for child in [&mut sleeper, &mut tree] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[needs("unshare")]
#[test]
fn sigkill_leaves_no_helper_of_the_test() {
    let mark = format!("{}-helpers", std::process::id());
    let (mut victim, report) = start_victim("helpers_victim", &mark, "helpers ");
    let helpers: Vec<u32> = report
        .split(' ')
        .skip(1)
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(helpers.len(), 3, "{report}");
    // The victim, its sleeper, unshare, the shell and its two sleeps (all
    // alive before the shell said "started"), the container. A program
    // shows its environment only once its execve is done, which may be a
    // moment after the spawn that started it returned.
    let all_run =
        |running: &[u32]| helpers.iter().all(|pid| running.contains(pid)) && running.len() >= 7;
    assert!(
        eventually(STARTS_WITHIN, || all_run(&marked(&mark))),
        "not every helper runs: {report}; marked: {:?}",
        described(&marked(&mark))
    );

    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();

    // A process that is being killed loses its environment before it is a
    // zombie: wait for both views.
    let alive = || -> Vec<u32> {
        let mut alive = marked(&mark);
        alive.extend(helpers.iter().filter(|&&pid| process_alive(pid)));
        alive.sort_unstable();
        alive.dedup();
        alive
    };
    assert!(
        eventually(GONE_WITHIN, || alive().is_empty()),
        "processes the killed test started survive it: {:?}",
        described(&alive())
    );
}
