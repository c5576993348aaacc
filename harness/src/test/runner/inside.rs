//! The container side of a `#[netns_test]`: the body's context (its
//! network, the pipe its result goes to, the peers it starts), and the
//! function that runs the body and reports how it ended.

use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::{CONTEXT_VAR, display_name};
use crate::common::protocol::{BodyEnd, Context, Outcome, Peer};
use crate::network::lab::Lab;
use crate::process::container;
use crate::{Net, kernel::sys};

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

impl crate::Net {
    /// The network of the running test body.
    ///
    /// # Panics
    /// Outside the body of a `#[netns_test]`.
    pub fn current() -> Net {
        Self::try_current().unwrap_or_else(|| {
            panic!("Net::current() is only available in the body of a #[netns_test]")
        })
    }

    /// The network of the running test body, or `None` outside one.
    pub fn try_current() -> Option<Net> {
        inside().map(|inside| inside.net.clone())
    }
}

/// The container side of a test: its network, the pipe its result goes
/// to, and the peers its body started.
pub(crate) struct Inside {
    pub net: crate::Net,
    result: Mutex<Option<File>>,
    peers: Mutex<Vec<Peer>>,
}

impl Inside {
    /// Notes what happened to a peer of the body, for the failure report.
    fn record(&self, event: &container::Event<'_>) {
        let mut peers = lock(&self.peers);
        match *event {
            container::Event::Started { name, addr, pid } => peers.push(Peer {
                pid,
                name: name.to_owned(),
                addr,
                ended: None,
            }),
            container::Event::Ended { pid, ref how } => {
                if let Some(peer) = peers.iter_mut().find(|p| p.pid == pid) {
                    peer.ended = Some(how.clone());
                }
            }
        }
    }

    /// Sends how the body ended, its peers and what it had in force, to
    /// the runner, once, and closes the pipe.
    fn send_result(&self, end: BodyEnd, in_force: Vec<String>) {
        let outcome = Outcome {
            end,
            peers: lock(&self.peers).clone(),
            in_force,
        };
        if let Some(mut pipe) = lock(&self.result).take() {
            let _ = pipe.write_all(&outcome.encode());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The test container's context, if this process is one.
fn inside() -> Option<&'static Inside> {
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
            let inner = crate::network::lab::LabInner::adopt(ctx.view, lab_ns, outside_ns, None)
                .unwrap_or_else(|e| panic!("netns-harness: cannot reach the test's lab: {e}"));
            // Every container this process starts is a peer of the body.
            container::watch(|event| {
                if let Some(inside) = inside() {
                    inside.record(event);
                }
            });
            let lab = Lab::from_inner(inner);
            crate::network::lab::share(&lab);
            Some(Inside {
                net: crate::Net::new(lab, ctx.addr, ctx.port),
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

/// The container side: runs the body of test `name` on a thread named
/// after it (as libtest would), reports how it ended to the runner and
/// exits (0 passed, 1 returned an error, 101 panicked). With
/// [`KEEP_VAR`](crate::KEEP_VAR) set, a panicking body reports and
/// then stays where it is, peers and all, until the runner kills it.
pub fn run_in_container<R: TestResult + 'static>(name: &'static str, body: fn() -> R) -> ! {
    let inside = inside().unwrap_or_else(|| {
        panic!("netns-harness: a test body ran outside its container; run it through its #[netns_test] function")
    });
    static MESSAGE: Mutex<String> = Mutex::new(String::new());
    static IN_FORCE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let keep = crate::common::settings::get().keep_on_failure;
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_owned());
        default_hook(info);
        // Before unwinding drops the body's faults (and peers).
        let in_force = crate::network::in_force();
        if keep {
            let _ = std::io::stdout().flush();
            inside.send_result(BodyEnd::Panicked(message), in_force);
            loop {
                std::thread::park();
            }
        }
        *lock(&MESSAGE) = message;
        *lock(&IN_FORCE) = in_force;
    }));
    let thread = std::thread::Builder::new()
        .name(display_name(name).to_owned())
        .spawn(move || body().into_result());
    let outcome = match thread {
        Ok(thread) => thread.join(),
        Err(e) => panic!("netns-harness: cannot start the test's thread: {e}"),
    };
    let (end, code) = match outcome {
        Ok(Ok(())) => (BodyEnd::Passed, 0),
        Ok(Err(e)) => {
            eprintln!("Error: {e}");
            (BodyEnd::Returned(e), 1)
        }
        Err(_) => (BodyEnd::Panicked(lock(&MESSAGE).clone()), 101),
    };
    tracing::debug!(test = display_name(name), ?end, "body ended");
    let in_force = match end {
        BodyEnd::Panicked(_) => std::mem::take(&mut *lock(&IN_FORCE)),
        // What is still in force: faults went with their guards, links
        // emulated by this process stay until it exits.
        _ => crate::network::in_force(),
    };
    let _ = std::io::stdout().flush();
    inside.send_result(end, in_force);
    std::process::exit(code)
}
