//! SIGKILL at many instants of a lab's and its containers' lives: building
//! the lab, cloning, configuring, probing, tearing down. Each time, nothing
//! of the killed process remains: no process, interface, namespace or
//! mount, and the host's network state is unchanged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use netns_harness::probe::{ProbeOptions, Prober};
use netns_harness::{Lab, Spec};
use netns_harness_suite::{HostState, eventually};

const MARK_VAR: &str = "NETNS_HARNESS_SUITE_CHAOS";
const KILLS: u64 = 20;

/// Every process whose environment carries `mark`: the victim's containers
/// and their children inherit it.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK_VAR}={mark}");
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

#[test]
fn sigkill_at_twenty_instants_leaves_nothing() {
    let host = HostState::capture();
    let mount_table = mounts();
    for kill in 0..KILLS {
        let mark = format!("{}-{kill}", std::process::id());
        let mut victim = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "chaos_victim", "--ignored", "--nocapture"])
            .env(MARK_VAR, &mark)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let started = BufReader::new(victim.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .any(|l| l == "started");
        assert!(started, "the victim did not start");
        // Instants spread over a few cycles of the victim's loop.
        std::thread::sleep(Duration::from_millis(kill * 17));
        victim.kill().unwrap();
        victim.wait().unwrap();
        assert!(
            eventually(Duration::from_secs(10), || marked(&mark).is_empty()),
            "kill {kill} at {} ms: processes survive: {:?}",
            kill * 17,
            marked(&mark)
        );
        assert_eq!(
            mounts(),
            mount_table,
            "kill {kill}: the mount table changed"
        );
        HostState::capture().assert_unchanged(&host);
    }
}
