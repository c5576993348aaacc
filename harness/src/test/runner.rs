//! The runtime behind `#[netns_test]`.
//!
//! The test function libtest (or nextest) runs is the *runner*: it reserves
//! addresses on the lab's bridge and re-executes the test binary in a
//! container, where the *body* runs as a plain function (no libtest there,
//! so it runs exactly once). The container inherits descriptors of the lab's
//! namespaces, so the body can spawn peers on the same bridge, and a pipe on
//! which it reports how it ended. The runner forwards the container's
//! output (standard output and error, in order) through `print!`, so libtest
//! shows it for failing tests and `--nocapture` shows it live.

use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::common::error::{Error, Result};
use crate::common::protocol::{BodyEnd, Context, HostEntry, Outcome};
use crate::common::settings::{SEED_VAR, SKIP_VAR};
use crate::network::lab::{Lab, Lease};
use crate::network::link::{self, Conditions};
use crate::network::topology::Topology;
use crate::process::container::{self, Attach, Container};
use crate::{Fs, Spec, Stack, Stdio, common::names, kernel::sys};

/// Carries a test container's [`Context`] into it.
const CONTEXT_VAR: &str = "NETNS_HARNESS_TEST_CONTEXT";

/// How many peers a test's body can have alive at once: the runner reserves
/// that many addresses for it.
pub const MAX_PEERS: usize = 15;

/// Which bridge a test's container is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// The test process's shared lab.
    Shared,
    /// A lab of the test's own.
    Private,
}

/// One `#[netns_test]`, as the attribute describes it.
#[derive(Debug)]
pub struct Test {
    /// The test's path, `module_path!()` and its name.
    pub name: &'static str,
    /// How long the body may run.
    pub timeout: Duration,
    /// Its bridge.
    pub network: Network,
    /// What its container sees of the filesystem.
    pub fs: Fs,
    /// The conditions of what its `eth0` sends, as text (checked by the
    /// macro; empty for none).
    pub link: &'static str,
    /// Which IP families its network carries.
    pub stack: Stack,
    /// The router of a network of the test's own, on the process's
    /// shared topology (or on a topology of its own with
    /// [`Network::Private`]); `None` for the lab.
    pub nat: Option<crate::Preset>,
    /// The function the container runs: the body, adapted.
    pub entry: fn(),
}

impl Test {
    fn display_name(&self) -> &'static str {
        display_name(self.name)
    }

    /// A valid hostname from the function's name.
    fn hostname(&self) -> String {
        let last = self.name.rsplit("::").next().unwrap_or("test");
        let name: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(names::MAX_LEN)
            .collect();
        let name = name.trim_start_matches('-');
        if name.is_empty() {
            "test".to_owned()
        } else {
            name.to_owned()
        }
    }
}

/// The name libtest shows for the test at `path`: without the crate's name.
fn display_name(path: &'static str) -> &'static str {
    path.split_once("::").map_or(path, |(_, rest)| rest)
}

/// How a test ended, as the runner saw it.
enum Verdict {
    Passed,
    Failed(String),
}

/// The runner side of a `#[netns_test]`: runs the body in a container and
/// panics, with the body's panic message, if it failed.
#[track_caller]
pub fn run_test(test: &Test) {
    let started = Instant::now();
    let name = test.display_name();
    tracing::debug!(test = name, network = ?test.network, timeout = ?test.timeout, "test started");
    let lab = match (test.nat, test.network) {
        (Some(preset), network) => nat_network(preset, network),
        (None, Network::Shared) => Lab::shared_with(test.stack),
        (None, Network::Private) => Lab::builder().stack(test.stack).build(),
    };
    let verdict = lab.and_then(|lab| run(&lab, test));
    let elapsed = started.elapsed();
    match verdict {
        Ok(Verdict::Passed) => tracing::info!(test = name, ?elapsed, "test passed"),
        Ok(Verdict::Failed(message)) => {
            tracing::info!(test = name, ?elapsed, failure = message, "test failed");
            panic!("{message}")
        }
        Err(err @ Error::Unsupported { .. }) if crate::common::settings::get().skip_unsupported => {
            tracing::info!(test = name, reason = %err, "test skipped");
            // Straight to the terminal: libtest hides what passing tests print.
            let _ = writeln!(
                std::io::stderr(),
                "netns-harness: skipped {name} ({SKIP_VAR}=1): {err}"
            );
        }
        Err(err) => {
            tracing::warn!(test = name, error = %err, "test could not run");
            panic!(
                "netns-harness: cannot run {} in a container: {err}{}",
                test.display_name(),
                if matches!(err, Error::Unsupported { .. }) {
                    format!("; or set {SKIP_VAR}=1 to skip such tests on this machine")
                } else {
                    String::new()
                }
            )
        }
    }
}

fn run(lab: &Lab, test: &Test) -> Result<Verdict> {
    let Started {
        mut container,
        result,
        peers,
        view_prefix,
        seed,
    } = start(lab, test)?;
    let capture = container.take_capture();
    let waiting = Instant::now();
    let deadline = waiting + test.timeout;
    let keep = crate::common::settings::get().keep_on_failure;
    let watched = crate::test::output::watch(container.take_stdout(), result, deadline, |result| {
        keep && panicked(result)
    })
    .map_err(|e| Error::os(format!("read the output of {}", test.display_name()), e))?;
    tracing::trace!(
        test = test.display_name(),
        reported = watched.is_some(),
        waited = ?waiting.elapsed(),
        "waited for the body's result"
    );
    let (verdict, said) = match watched {
        None => {
            // Kill first, whatever the body does (floods its link, forks,
            // ignores signals): the report comes after.
            container.kill()?;
            container.wait_timeout(EXIT_GRACE)?;
            let message = format!(
                "test {} timed out after {:?}; its container and every process in it were killed",
                test.display_name(),
                test.timeout
            );
            (Verdict::Failed(message), None)
        }
        Some(result) => {
            let status = if keep && panicked(&result) {
                None
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                container.wait_timeout(left.max(EXIT_GRACE))?
            };
            let outcome = Outcome::decode(&result);
            let end = outcome.as_ref().map(|o| o.end.clone());
            (judge(test, end, status), outcome)
        }
    };
    // A body that emulated its own link took the emulator with it: the
    // veth pair that stood in for its port goes too.
    if let (Some(outcome), Some(port)) = (&said, container.port_name()) {
        let line = link::emulated_line(port);
        if outcome.in_force.iter().any(|l| l.starts_with(&line)) {
            let forgotten = link::forget(&mut lab.inner.rtnl(), port);
            if let Err(e) = forgotten {
                eprintln!("netns-harness: {e}");
            }
        }
    }
    if let Verdict::Failed(_) = verdict {
        let name = test.display_name();
        let report = crate::tools::failure::report(
            name,
            lab,
            &container,
            &view_prefix,
            said.as_ref(),
            capture,
            seed,
        );
        print!("{report}");
        if keep {
            crate::tools::failure::keep(name, lab, &container);
        }
    }
    // Kill, reap and unplug the container before its peers' addresses go
    // back; the ports of the peers it started (or may have: it said
    // nothing) that are still on the bridge (it was killed with them, or
    // exited without dropping them) come off it first too.
    drop(container);
    if said
        .as_ref()
        .is_none_or(|outcome| !outcome.peers.is_empty())
    {
        lab.inner.detach_ports(&view_prefix);
    }
    drop(peers);
    Ok(verdict)
}

/// A network of the test's own behind a router of `preset`, on the
/// process's topology, or on one of the test's own.
fn nat_network(preset: crate::Preset, network: Network) -> Result<Lab> {
    let topology = match network {
        Network::Shared => Topology::shared()?,
        Network::Private => Topology::builder().build()?,
    };
    topology.make(
        &crate::network::topology::Network::new("test").preset(preset),
        false,
    )
}

/// Whether a result says the body panicked.
fn panicked(result: &[u8]) -> bool {
    Outcome::decode(result).is_some_and(|o| matches!(o.end, BodyEnd::Panicked(_)))
}

/// A test's container, started, with what the runner keeps of its start.
struct Started {
    container: Container,
    /// The read end of the pipe its result comes on.
    result: File,
    /// The addresses reserved for its peers.
    peers: Vec<Lease>,
    /// The prefix of its peers' port names.
    view_prefix: String,
    /// The seed its random link conditions derive from.
    seed: u64,
}

/// Reserves the test's address and its peers', and starts its container
/// with its [`Context`].
fn start(lab: &Lab, test: &Test) -> Result<Started> {
    let inner = &lab.inner;
    // Its link conditions first: what fails takes nothing.
    let seed = link::choose_seed();
    let conditions = (!test.link.is_empty())
        .then(|| -> Result<Conditions> {
            let mut conditions: Conditions =
                test.link.parse().map_err(|e| Error::InvalidConditions {
                    conditions: test.link.to_owned(),
                    reason: format!("{e}"),
                })?;
            if conditions.is_random() {
                conditions
                    .seed
                    .get_or_insert(link::derive_seed(seed, u64::MAX));
            }
            Ok(conditions)
        })
        .transpose()?;
    let own = inner.lease()?;
    // Addresses for the body's peers: as many as are free, up to the limit.
    let peers: Vec<Lease> = std::iter::from_fn(|| inner.lease().ok())
        .take(MAX_PEERS)
        .collect();
    let (result_read, result_write) =
        sys::pipe().map_err(|e| Error::os("create a pipe for a test's result", e))?;
    let view_prefix = inner.view_prefix();
    let ahead = inner.take_ahead();
    let port = ahead
        .as_ref()
        .map_or_else(|| inner.port_name(), |slot| slot.port.clone());
    // The body knows the containers its file lists: those alive now, and
    // itself (which its spawn adds to this process's table).
    let mut hosts = inner.hosts().containers();
    hosts.push(HostEntry {
        addrs: inner.addressing().addrs(own.addr()),
        name: Some(test.hostname()),
        aliases: Vec::new(),
    });
    let context = Context {
        lab_fd: inner.lab_ns().as_raw_fd(),
        outside_fd: inner.outside_ns().as_raw_fd(),
        result_fd: result_write.as_raw_fd(),
        addr: own.addr(),
        port: port.clone(),
        view: inner.view(
            view_prefix.clone(),
            peers.iter().map(Lease::addr).collect(),
            hosts,
        ),
    };
    let mut spec = Spec::function(test.entry)
        .name(test.hostname())
        .fs(test.fs)
        .env(SEED_VAR, seed.to_string())
        .env(CONTEXT_VAR, context.encode())
        .stdout(Stdio::Piped)
        .stderr_to_stdout();
    if let Some(conditions) = conditions {
        spec = spec.link(conditions);
    }
    let extras = container::Extras {
        inherit: vec![context.lab_fd, context.outside_fd, context.result_fd],
        capture: cfg!(feature = "capture") && crate::common::settings::get().capture,
        port: Some(port),
        ahead,
    };
    let container = container::spawn(inner, &spec, Attach::Bridge(Some(own)), extras)?;
    Ok(Started {
        container,
        result: File::from(result_read),
        peers,
        view_prefix,
        seed,
    })
}

/// How long a container that reported may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The verdict on how a body said it ended (`None`: it said nothing
/// readable) and how its container exited (`None`: it was kept alive).
fn judge(test: &Test, end: Option<BodyEnd>, status: Option<std::process::ExitStatus>) -> Verdict {
    match end {
        Some(BodyEnd::Passed) if status.is_some_and(|s| s.success()) => Verdict::Passed,
        Some(BodyEnd::Panicked(message)) => Verdict::Failed(message),
        Some(BodyEnd::Returned(error)) => Verdict::Failed(format!(
            "test {} returned an error: {error}",
            test.display_name()
        )),
        Some(BodyEnd::Passed) | None => {
            let how = status.map_or_else(|| "no exit".to_owned(), |s| s.to_string());
            Verdict::Failed(format!(
                "the container of test {} ended ({how}) before its body finished",
                test.display_name()
            ))
        }
    }
}

mod inside;
pub(crate) use inside::take_context;
pub use inside::{TestResult, run_in_container};

#[cfg(test)]
mod tests;
