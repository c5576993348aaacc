//! netns-harness: integration tests for code that touches the network, each
//! in a freshly cloned Linux container.
//!
//! A [`Lab`] is a bridge with a gateway, NAT (masquerade) and an "outside"
//! network standing in for the internet, all inside network namespaces that
//! belong to the test process: nothing is created on the host, and
//! everything vanishes with the process, even when it is killed with SIGKILL.
//! [`Lab::spawn`] clones a [`Container`] into new network, mount, PID, UTS
//! and IPC namespaces, with an `eth0` on the bridge, an address of the lab
//! subnet and a default route through the gateway; it runs a program or a
//! Rust function of the test executable ([`Spec`]).
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
//! # Privileges
//!
//! As root, labs are created directly. Otherwise the process enters a user
//! namespace of its own before `main` (see [`ROOTLESS_VAR`]), where it may
//! create namespaces if the kernel allows unprivileged user namespaces; when
//! it does not, [`Lab::builder`]'s `build` returns [`Error::Unsupported`]
//! with the reason and the fix.

#![warn(clippy::unwrap_used)]

mod container;
mod entry;
mod error;
mod lab;
mod names;
mod net;
mod netlink;
mod netns;
mod nftables;
mod rootless;
mod rtnl;
mod runner;
mod spawner;
mod subnet;
mod sys;

pub use container::{Container, Spec, Stdio};
pub use error::{Error, Result};
pub use lab::{DEFAULT_BRIDGE, DEFAULT_SUBNET, Lab, LabBuilder, UPLINK};
pub use net::Net;
pub use netns_harness_macros::netns_test;
pub use rootless::{ROOTLESS_VAR, is_rootless};
pub use runner::{MAX_PEERS, SKIP_VAR};
pub use subnet::Ipv4Subnet;

/// What a test file needs: `use netns_harness::prelude::*;`.
pub mod prelude {
    pub use crate::{Container, Lab, Net, Spec, Stdio, netns_test};
}

/// The runtime the `#[netns_test]` expansion calls; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::runner::{Network, Test, TestResult, block_on, run_in_container, run_test};
}
