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
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::container::{self, Attach};
use crate::error::{Error, Result};
use crate::lab::{Lab, Lease};
use crate::subnet::Ipv4Subnet;
use crate::{Spec, Stdio, names, sys};

/// Set to `1` to turn "cannot create containers on this machine" into a
/// visible skip: the test passes and prints one line saying why.
pub const SKIP_VAR: &str = "NETNS_HARNESS_SKIP_UNSUPPORTED";

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

/// What a lab handle in a test container may do: the lab's settings, the
/// addresses reserved for its peers and the prefix of its port names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LabView {
    pub subnet: Ipv4Subnet,
    pub bridge: String,
    pub bridge_index: u32,
    pub port_prefix: String,
    pub addrs: Vec<Ipv4Addr>,
}

/// What a test container learns from its runner.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Context {
    lab_fd: RawFd,
    outside_fd: RawFd,
    result_fd: RawFd,
    addr: Ipv4Addr,
    view: LabView,
}

impl Context {
    fn encode(&self) -> String {
        let addrs: Vec<String> = self.view.addrs.iter().map(ToString::to_string).collect();
        format!(
            "{} {} {} {} {} {} {} {} {}",
            self.lab_fd,
            self.outside_fd,
            self.result_fd,
            self.addr,
            self.view.subnet,
            self.view.bridge,
            self.view.bridge_index,
            self.view.port_prefix,
            addrs.join(",")
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut fields = text.split(' ');
        let mut next = || fields.next();
        let context = Self {
            lab_fd: next()?.parse().ok()?,
            outside_fd: next()?.parse().ok()?,
            result_fd: next()?.parse().ok()?,
            addr: next()?.parse().ok()?,
            view: LabView {
                subnet: next()?.parse().ok()?,
                bridge: next()?.to_owned(),
                bridge_index: next()?.parse().ok()?,
                port_prefix: next()?.to_owned(),
                addrs: match next()? {
                    "" => Vec::new(),
                    list => list
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .ok()?,
                },
            },
        };
        next().is_none().then_some(context)
    }
}

/// The context variable, taken out of the environment before `main` so that
/// the body's own children do not see it.
static CONTEXT_TEXT: OnceLock<Option<String>> = OnceLock::new();

/// Takes the context variable; called before `main`.
pub(crate) fn take_context() {
    CONTEXT_TEXT.get_or_init(|| {
        let text = std::env::var(CONTEXT_VAR).ok()?;
        // SAFETY: called before main, while the process has one thread.
        unsafe { sys::remove_env(CONTEXT_VAR) };
        Some(text)
    });
}

/// The container side of a test: its network, the pipe its result goes
/// to, and the peers its body started.
pub(crate) struct Inside {
    pub net: crate::Net,
    result: Mutex<Option<File>>,
    peers: Mutex<Vec<String>>,
}

impl Inside {
    /// Notes a peer the body started, for the failure report.
    pub(crate) fn peer_started(&self, name: &str, addr: Ipv4Addr, pid: u32) {
        lock(&self.peers).push(format!("{pid} {name} {addr}: running"));
    }

    /// Notes how a peer ended.
    pub(crate) fn peer_ended(&self, pid: u32, how: &str) {
        let prefix = format!("{pid} ");
        if let Some(line) = lock(&self.peers)
            .iter_mut()
            .find(|l| l.starts_with(&prefix))
            && let Some((head, _)) = line.rsplit_once(": ")
        {
            *line = format!("{head}: {how}");
        }
    }

    /// Sends how the body ended, and its peers, to the runner, once, and
    /// closes the pipe.
    fn send_result(&self, report: &str) {
        let peers: String = lock(&self.peers)
            .iter()
            .map(|p| {
                format!(
                    "  {}\n",
                    p.split_once(' ').map_or(p.as_str(), |(_, rest)| rest)
                )
            })
            .collect();
        if let Some(mut pipe) = lock(&self.result).take() {
            let _ = pipe.write_all(format!("{report}{PEERS}{peers}").as_bytes());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The test container's context, if this process is one.
pub(crate) fn inside() -> Option<&'static Inside> {
    static INSIDE: OnceLock<Option<Inside>> = OnceLock::new();
    INSIDE
        .get_or_init(|| {
            let text = CONTEXT_TEXT.get()?.as_deref()?;
            let ctx = Context::decode(text)
                .filter(|c| {
                    [c.lab_fd, c.outside_fd, c.result_fd]
                        .into_iter()
                        .all(sys::fd_is_open)
                })
                .unwrap_or_else(|| panic!("netns-harness: malformed {CONTEXT_VAR}={text:?}"));
            // SAFETY: the runner made these descriptors inheritable for this
            // process, and nothing else in it owns them.
            let (lab_ns, outside_ns, result) = unsafe {
                (
                    sys::adopt_fd(ctx.lab_fd),
                    sys::adopt_fd(ctx.outside_fd),
                    sys::adopt_fd(ctx.result_fd),
                )
            };
            // Not for the body's own children.
            for fd in [&lab_ns, &outside_ns, &result] {
                sys::set_cloexec(fd.as_fd())
                    .unwrap_or_else(|e| panic!("netns-harness: cannot set close-on-exec: {e}"));
            }
            let inner = crate::lab::LabInner::adopt(ctx.view, lab_ns, outside_ns)
                .unwrap_or_else(|e| panic!("netns-harness: cannot reach the test's lab: {e}"));
            Some(Inside {
                net: crate::Net::new(Lab::from_inner(inner), ctx.addr),
                result: Mutex::new(Some(File::from(result))),
                peers: Mutex::new(Vec::new()),
            })
        })
        .as_ref()
}

/// What the body of a `#[netns_test]` may return: `()` or
/// `Result<(), E>` with `E: Debug`.
#[diagnostic::on_unimplemented(
    message = "a #[netns_test] function must return `()` or `Result<(), E>` where `E: Debug`, not `{Self}`"
)]
pub trait TestResult {
    /// `Err` with the error's `Debug` text when the test failed.
    fn into_result(self) -> Result<(), String>;
}

impl TestResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> TestResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Runs a future to completion on a fresh single-threaded tokio runtime
/// (with I/O and timers), as the body of an `async` test.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("netns-harness: cannot start a tokio runtime: {e}"))
        .block_on(future)
}

const OK: &str = "ok";
const PANIC: &str = "panic\n";
const ERROR: &str = "error\n";
/// Separates the outcome from the list of peers in a result.
const PEERS: &str = "\n\u{1e}peers\n";

/// The container side: runs the body of test `name` on a thread named
/// after it (as libtest would), reports how it ended to the runner and
/// exits (0 passed, 1 returned an error, 101 panicked). With
/// [`KEEP_VAR`](crate::failure::KEEP_VAR) set, a panicking body reports and
/// then stays where it is, peers and all, until the runner kills it.
pub fn run_in_container<R: TestResult + 'static>(name: &'static str, body: fn() -> R) -> ! {
    let inside = inside().unwrap_or_else(|| {
        panic!("netns-harness: a test body ran outside its container; run it through its #[netns_test] function")
    });
    static MESSAGE: Mutex<String> = Mutex::new(String::new());
    let keep = crate::failure::keep_requested();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        default_hook(info);
        if keep {
            // Before unwinding drops the body's peers.
            let _ = std::io::stdout().flush();
            inside.send_result(&format!("{PANIC}{message}"));
            loop {
                std::thread::park();
            }
        }
        *lock(&MESSAGE) = message;
    }));
    let thread = std::thread::Builder::new()
        .name(display_name(name).to_owned())
        .spawn(move || body().into_result());
    let outcome = match thread {
        Ok(thread) => thread.join(),
        Err(e) => panic!("netns-harness: cannot start the test's thread: {e}"),
    };
    let (report, code) = match outcome {
        Ok(Ok(())) => (OK.to_owned(), 0),
        Ok(Err(e)) => {
            eprintln!("Error: {e}");
            (format!("{ERROR}{e}"), 1)
        }
        Err(_) => (format!("{PANIC}{}", lock(&MESSAGE)), 101),
    };
    let _ = std::io::stdout().flush();
    inside.send_result(&report);
    std::process::exit(code)
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
    let lab = match test.network {
        Network::Shared => Lab::shared(),
        Network::Private => Lab::builder().build(),
    };
    let verdict = lab.and_then(|lab| run(&lab, test));
    match verdict {
        Ok(Verdict::Passed) => {}
        Ok(Verdict::Failed(message)) => panic!("{message}"),
        Err(err @ Error::Unsupported { .. }) if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") => {
            // Straight to the terminal: libtest hides what passing tests print.
            let _ = writeln!(
                std::io::stderr(),
                "netns-harness: skipped {} ({SKIP_VAR}=1): {err}",
                test.display_name()
            );
        }
        Err(err) => panic!(
            "netns-harness: cannot run {} in a container: {err}{}",
            test.display_name(),
            if matches!(err, Error::Unsupported { .. }) {
                format!("; or set {SKIP_VAR}=1 to skip such tests on this machine")
            } else {
                String::new()
            }
        ),
    }
}

fn run(lab: &Lab, test: &Test) -> Result<Verdict> {
    let inner = &lab.inner;
    let own = inner.lease()?;
    // Addresses for the body's peers: as many as are free, up to the limit.
    let peers: Vec<Lease> = std::iter::from_fn(|| inner.lease().ok())
        .take(MAX_PEERS)
        .collect();
    let (result_read, result_write) =
        sys::pipe().map_err(|e| Error::os("create a pipe for a test's result", e))?;
    let view_prefix = inner.view_prefix();
    let context = Context {
        lab_fd: inner.lab_ns().as_raw_fd(),
        outside_fd: inner.outside_ns().as_raw_fd(),
        result_fd: result_write.as_raw_fd(),
        addr: own.addr(),
        view: LabView {
            subnet: inner.subnet(),
            bridge: inner.bridge().to_owned(),
            bridge_index: inner.bridge_index(),
            port_prefix: view_prefix.clone(),
            addrs: peers.iter().map(Lease::addr).collect(),
        },
    };
    let mut spec = Spec::function(test.entry)
        .name(test.hostname())
        .env(CONTEXT_VAR, context.encode())
        .stdout(Stdio::Piped)
        .stderr_to_stdout();
    spec.inherit = vec![context.lab_fd, context.outside_fd, context.result_fd];
    spec.capture = crate::failure::capture_enabled();
    let mut container = container::spawn(inner, &spec, Attach::Bridge(Some(own)))?;
    drop(result_write);
    let capture = container.take_capture();
    let deadline = Instant::now() + test.timeout;
    let keep = crate::failure::keep_requested();
    let watched = crate::output::watch(
        container.take_stdout(),
        File::from(result_read),
        deadline,
        |result| keep && result.starts_with(PANIC),
    )
    .map_err(|e| Error::os(format!("read the output of {}", test.display_name()), e))?;
    let (verdict, peer_lines) = match watched {
        None => {
            // Kill first, whatever the body does (floods its link, forks,
            // ignores signals): the report comes after.
            container.kill()?;
            container.wait_timeout(EXIT_GRACE)?;
            (
                Verdict::Failed(format!(
                    "test {} timed out after {:?}; its container and every process in it were killed",
                    test.display_name(),
                    test.timeout
                )),
                "  (killed with the container at the timeout)\n".to_owned(),
            )
        }
        Some(result) => {
            let (outcome, peer_lines) = result.split_once(PEERS).unwrap_or((result.as_str(), ""));
            let kept_alive = keep && outcome.starts_with(PANIC);
            let status = if kept_alive {
                None
            } else {
                container.wait_timeout(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(EXIT_GRACE),
                )?
            };
            (judge(test, outcome, status), peer_lines.to_owned())
        }
    };
    if let Verdict::Failed(_) = verdict {
        let name = test.display_name();
        print!(
            "{}",
            crate::failure::report(name, lab, &container, &view_prefix, &peer_lines, capture)
        );
        if keep {
            crate::failure::keep(name, lab, &container);
        }
    }
    // Kill, reap and unplug the container before its peers' addresses go back.
    drop(container);
    drop(peers);
    Ok(verdict)
}

/// How long a container that reported may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The verdict on what a body reported (`outcome`) and how its container
/// exited (`None`: it was kept alive).
fn judge(test: &Test, outcome: &str, status: Option<std::process::ExitStatus>) -> Verdict {
    let passed = outcome == OK && status.is_some_and(|s| s.success());
    if passed {
        Verdict::Passed
    } else if let Some(message) = outcome.strip_prefix(PANIC) {
        Verdict::Failed(message.to_owned())
    } else if let Some(error) = outcome.strip_prefix(ERROR) {
        Verdict::Failed(format!(
            "test {} returned an error: {error}",
            test.display_name()
        ))
    } else {
        let how = status.map_or_else(|| "no exit".to_owned(), |s| s.to_string());
        Verdict::Failed(format!(
            "the container of test {} ended ({how}) before its body finished",
            test.display_name()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_survives_the_environment() {
        let context = Context {
            lab_fd: 5,
            outside_fd: 6,
            result_fd: 9,
            addr: Ipv4Addr::new(10, 200, 0, 2),
            view: LabView {
                subnet: "10.200.0.0/16".parse().unwrap(),
                bridge: "br0".into(),
                bridge_index: 3,
                port_prefix: "t1fp".into(),
                addrs: vec![Ipv4Addr::new(10, 200, 0, 3), Ipv4Addr::new(10, 200, 0, 4)],
            },
        };
        assert_eq!(Context::decode(&context.encode()), Some(context.clone()));
        let none = Context {
            view: LabView {
                addrs: Vec::new(),
                ..context.view
            },
            ..context
        };
        assert_eq!(Context::decode(&none.encode()), Some(none));
        assert_eq!(Context::decode("5 6"), None);
    }

    #[test]
    fn hostnames_come_from_the_function_name() {
        let test = |name| Test {
            name,
            timeout: Duration::from_secs(1),
            network: Network::Shared,
            entry: || {},
        };
        assert_eq!(
            test("suite::a_rather_long_test_name").hostname(),
            "a_rather_long_t"
        );
        assert_eq!(test("suite::cases::case_1").hostname(), "case_1");
        assert_eq!(test("suite::cases::case_1").display_name(), "cases::case_1");
    }
}
