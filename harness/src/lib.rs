//! netns-harness: integration tests for code that touches the network, each
//! in a freshly cloned Linux container.
//!
//! Most users only write [`netns_test`]: the body of such a test runs in a
//! container of its own, with a [`Net`] to reach its gateway, the NAT, the
//! outside host and peers it starts. [`probe`] checks reachability (ICMP,
//! TCP, UDP), [`capture`] what crossed a link, [`matrix`] who reaches whom,
//! [`stun`] how a NAT maps, filters and hairpins (RFC 5780);
//! [`doctor`] says whether a machine can run all this.
//!
//! Underneath, a [`Lab`] is a bridge with a gateway, NAT (masquerade) and an "outside"
//! network standing in for the internet, all inside network namespaces that
//! belong to the test process: nothing is created on the host, and
//! everything vanishes with the process, even when it is killed with SIGKILL.
//! [`Lab::spawn`] clones a [`Container`] into new network, mount, PID, UTS
//! and IPC namespaces, with an `eth0` on the bridge, an address of the lab
//! subnet and a default route through the gateway; it runs a program or a
//! Rust function of the test executable ([`Spec`]).
//!
//! A [`Topology`] holds several such labs, each behind a router of a chosen
//! NAT behaviour ([`Preset`], [`Nat`], in RFC 4787's terms), on an internet
//! segment with two public hosts of two addresses each, which run STUN
//! responders; [`stun::classify`] measures a router from behind it, as RFC
//! 5780 describes. `#[netns_test(nat = "symmetric")]` runs a test behind
//! such a router, on a network of its own.
//!
//! ```no_run
//! use std::time::Duration;
//! use netns_harness::{Lab, Spec};
//!
//! let lab = Lab::shared()?;
//! let server = lab.spawn(&Spec::command("sleep").arg("30").name("server"))?;
//! let ping = lab
//!     .spawn(&Spec::command("ping").args(["-c1", &server.addr().to_string()]))?
//!     .output(Duration::from_secs(5))?;
//! assert!(ping.status.success());
//! # Ok::<(), netns_harness::Error>(())
//! ```
//!
//! # Features
//!
//! All three are on by default; `default-features = false` keeps labs,
//! containers, links, faults, the [`doctor`] and `#[netns_test]` with plain
//! `fn` bodies, and drops their dependencies:
//!
//! - `probe`: the prober ([`probe`]), the reachability matrix ([`matrix`])
//!   and the NAT's table ([`conntrack`]); pulls in `pnet`.
//! - `capture`: recording a link ([`capture`], [`Lab::capture_outside`]),
//!   each test's bridge port, and the pcap of a failed test's report;
//!   pulls in `pcap-file`, and `probe` (a capture finds a probe's flows).
//!   Without it, a failed test's report says `capture: off`.
//! - `tokio`: `async fn` bodies of [`netns_test`], on a tokio runtime. Without
//!   it, an `async fn` test is a compile error, on its `async`, that names
//!   the feature.
//!
//! # Observability
//!
//! The harness logs its steps with [`tracing`](https://docs.rs/tracing):
//! a lab built and a container spawned (`debug`, with how long each took),
//! a container torn down (`debug`), the waits for links to come up and for
//! a port to forward (`trace`, with what and how long), a test's start,
//! its body's end (`debug`) and its verdict (`info`). Nothing is formatted
//! unless a subscriber wants the event. A subscriber installed in a test's
//! body sees what happens in the body's process (the peers it spawns), and
//! writes where the body prints: with `with_test_writer()`, its lines are
//! part of the test's captured output, shown when the test fails.
//!
//! # Privileges
//!
//! As root, labs are created directly. Otherwise the process enters a user
//! namespace of its own before `main` (see [`ROOTLESS_VAR`]), where it may
//! create namespaces if the kernel allows unprivileged user namespaces; when
//! it does not, [`Lab::builder`]'s `build` returns [`Error::Unsupported`]
//! with the reason and the fix. Either way, containers run in a user
//! namespace the test process makes for its labs, so a container's root
//! holds no capability over the host.
//!
//! # nextest
//!
//! `cargo nextest run` starts a process per test. The test processes of a
//! run share its labs all the same: the first one starts a *keeper*, a copy
//! of the test executable that builds the shared labs ([`Lab::shared`]) when
//! first asked and keeps them until nextest exits; every test process
//! connects to it before `main`, joins its user namespaces (so a rootless
//! run stays rootless) and adopts its labs with a port-name prefix and a
//! block of addresses of its own. When a process goes, however it goes, the
//! keeper takes its ports off the bridge and its addresses back. So a test
//! under nextest costs a few milliseconds more than under `cargo test`
//! (the process's start), not the twenty a lab of its own would, and sees
//! the same network: tests running at once share the bridge. The shared
//! lab's uplink is the run's, so [`Lab::uplink`] refuses it there. Set
//! [`KEEPER_VAR`]`=0` for a lab per test process instead. Topologies
//! (`nat = "…"`) and private labs are the process's own either way.
//!
//! # Modules
//!
//! `harness/src` is a folder per layer; a layer uses only those listed
//! before it (no import cycle, `shared/tools/modcycles.py` checks):
//!
//! 1. `common`: what every layer speaks: `error`, `settings` (every
//!    `NETNS_HARNESS_*` variable, read once), `subnet`, `names`, and
//!    `protocol` (every message between the harness's processes, typed).
//! 2. `kernel`: kernel access: `sys` (system calls through rustix),
//!    `netlink` (a socket of the rust-netlink crates), `rtnl`, `nftables`,
//!    `netns`, `rootless`, `packet` (recording an interface's frames),
//!    `seqpacket` (a local socket that passes descriptors), and
//!    the creation of processes: `prexec` (the child's code between clone
//!    and exec), `spawner` (the clone), `userns` (the labs' user
//!    namespace and its holders).
//! 3. `network`: network objects: `lab` ([`Lab`]), `topology`
//!    ([`Topology`]: networks behind NATs of chosen behaviours), [`stun`]
//!    (the public hosts' responders and the RFC 5780 classifier), `link`,
//!    `fault`, `hosts`, `keeper` (the keeper of a nextest run's labs).
//! 4. `process`: processes on a lab: `container` ([`Container`], [`Spec`]).
//! 5. `tools`: [`probe`], [`capture`], [`conntrack`], [`matrix`],
//!    [`doctor`], `snapshot` (a network's state as text) and `failure`
//!    (what a failed test leaves: its report, its pcap, its network kept on
//!    request).
//! 6. `test`: the runtime behind [`netns_test`] (`runner`), [`Net`],
//!    `output` (a body's output, bounded), `runtime` (the tokio runtime of
//!    `async` bodies) and `entry` (what runs before `main`). Tests come
//!    last: the runner uses the tools to report.
//!
//! Without a feature, a module is left out (`probe`, `matrix`,
//! `conntrack`, `capture`) or replaced by a stand-in of the same name that
//! cannot be used (`kernel::packet`, `tools::failure::pcap`,
//! `test::runtime`: `*_off.rs`), so the code around it reads the same with
//! every feature set.

#![warn(clippy::unwrap_used)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod common;
mod kernel;
mod network;
mod process;
mod test;
mod tools;

pub use network::stun;
#[cfg(feature = "capture")]
pub use tools::capture;
pub use tools::doctor;
#[cfg(feature = "probe")]
pub use tools::{conntrack, matrix, probe};

pub use common::error::{Error, Result};
pub use common::nat::{DEFAULT_UDP_TIMEOUT, Filtering, Mapping, Nat, Preset, Protocol};
pub use common::settings::{
    CAPTURE_VAR, KEEP_SECONDS_VAR, KEEP_VAR, KEEPER_VAR, ROOTLESS_VAR, SEED_VAR, SKIP_VAR,
};
pub use common::subnet::{Ipv4Subnet, Ipv6Subnet, Stack};
pub use kernel::rootless::is_rootless;
/// Runs a test function's body in a freshly cloned container on the test
/// process's lab bridge, as an ordinary libtest (or nextest) test.
///
/// ```no_run
/// use netns_harness::prelude::*;
///
/// #[netns_test]
/// fn reaches_the_gateway(net: Net) {
///     let ping = std::process::Command::new("ping")
///         .args(["-c1", &net.gateway().to_string()])
///         .status()
///         .unwrap();
///     assert!(ping.success());
/// }
///
/// #[netns_test(timeout = "5s", network = "private", flavor = "multi_thread", worker_threads = 2)]
/// async fn talks_to_a_peer(net: Net) -> Result<(), std::io::Error> {
///     let peer = net.spawn(&Spec::command("sleep").arg("30")).unwrap();
///     let _ = peer.addr();
///     Ok(())
/// }
/// ```
///
/// - The body runs in a container (new network, mount, PID, UTS and IPC
///   namespaces; `eth0` on the bridge; hostname = the function's name) that
///   re-executes the test binary; it runs exactly once, as PID 1.
/// - `fn` or `async fn` (with the `tokio` feature, on by default: a tokio
///   runtime is started in the container); returning `()` or
///   `Result<(), E>` with `E: Debug`; taking nothing or one [`Net`].
/// - `flavor = "current_thread"` (the default: the body and its tasks on
///   one thread) or `flavor = "multi_thread"`, with `worker_threads = 4`
///   (one per CPU unless given), for an `async fn`, as `#[tokio::test]`
///   spells them.
/// - `timeout = "10s"` (`ms`, `s`, `m`; default 60 s): on expiry the
///   container and every process in it are killed and the test fails.
/// - `network = "private"`: a lab of the test's own instead of the shared
///   one (the process's under `cargo test`, the run's under nextest: see
///   "nextest" in the crate's documentation).
/// - `nat = "symmetric"` (or `"full-cone"`, `"restricted-cone"`,
///   `"port-restricted-cone"`, `"none"`, `"cgnat"`: a [`Preset`]): the test's
///   container on a network of its own behind a router of that behaviour,
///   on the process's shared [`Topology`] (on one of the test's own with
///   `network = "private"`); its [`Net::lab`] is that network
///   ([`Lab::nat`], [`Lab::stun_servers`], [`Lab::public_hosts`],
///   [`Lab::forward`], [`Lab::flush_nat`]). IPv4 only.
/// - `fs = "overlay"`: the body's writes anywhere are its own, over a
///   copy-on-write view of the host's files ([`Fs::Overlay`]); `fs = "host"`:
///   the body sees the host's files as they are ([`Fs::Host`]); by default
///   it has its own `/tmp`, `/run`, `/var/tmp` and `/etc` network files
///   ([`Fs::Private`]; `fs = "private"` says so). Peers the body starts have
///   a [`Spec`]'s default, [`Fs::Private`].
/// - `crate = "name"`: the path of a renamed `netns-harness` dependency (found
///   from `Cargo.toml` otherwise).
/// - Output (stdout and stderr, in order) is shown for failing tests, or live
///   with `--nocapture`; panics keep their message, so `#[should_panic]`
///   works, and `#[ignore]`, `#[rstest]` cases (put `#[netns_test]` last)
///   compose. All libtest flags behave as with `#[test]`.
/// - Where no container can be made (no root, no user namespaces), the test
///   fails with the reason and the fix, or, with
///   `NETNS_HARNESS_SKIP_UNSUPPORTED=1` ([`SKIP_VAR`]), passes and prints one
///   line saying it was skipped and why.
pub use netns_harness_macros::netns_test;
pub use network::fault::{Blackhole, Fault, Packets, Ways};
pub use network::hosts::{GATEWAY_NAME, OUTSIDE_NAME};
pub use network::lab::{DEFAULT_BRIDGE, DEFAULT_SUBNET, DEFAULT_SUBNET6, Lab, LabBuilder, UPLINK};
pub use network::link::{Conditions, Direction, Distribution, Link, LinkDown, Loss};
pub use network::topology::{
    INTERNET_SUBNET, Network, PublicHost, STUN_PORTS, Topology, TopologyBuilder,
};
pub use process::container::{Container, Frozen, Fs, OUTPUT_LIMIT, Spec, Stdio};
pub use test::net::Net;
pub use test::runner::MAX_PEERS;

/// The README's code blocks, compiled as doctests (`cargo test --doc`).
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// What a test file needs: `use netns_harness::prelude::*;`.
pub mod prelude {
    pub use crate::{Conditions, Container, Direction, Fs, Lab, Net, Spec, Stdio, netns_test};
}

/// The runtime the `#[netns_test]` expansion calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__netns_harness_async_body as async_body;
    pub use crate::test::runner::{Network, Test, TestResult, run_in_container, run_test};
    pub use crate::test::runtime;
}
