//! The doctor: can this machine run netns tests, in which mode, and if
//! not, what to change. `cargo run --example doctor` prints it.

use std::fmt;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::common::error::Error;
use crate::kernel::netlink::Socket;
use crate::kernel::rootless::{self, Privilege, Settings};
use crate::kernel::rtnl::{Peer, Rtnl};
use crate::network::lab::Lab;
use crate::{Spec, kernel::nftables};

/// One check: what was tried, and what came of it.
#[derive(Debug)]
pub struct Finding {
    /// What was checked.
    pub name: &'static str,
    /// What was found, when it works.
    pub detail: Result<String, String>,
    /// What to do, when it does not.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(name: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            name,
            detail: Ok(detail.into()),
            fix: None,
        }
    }

    fn failed(name: &'static str, err: &Error, fix: &str) -> Finding {
        let (detail, fix) = match err {
            Error::Unsupported { reason, fix } => (reason.clone(), fix.clone()),
            _ => (err.to_string(), fix.to_owned()),
        };
        Finding {
            name,
            detail: Err(detail),
            fix: Some(fix),
        }
    }
}

/// How tests will make containers here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As root.
    Root,
    /// As an ordinary user, in a user namespace of the test process.
    Rootless,
    /// Not at all.
    Unsupported,
}

/// Every check and the resulting mode.
#[derive(Debug)]
pub struct Report {
    /// The checks, in order.
    pub checks: Vec<Finding>,
    /// The mode tests will use.
    pub mode: Mode,
}

impl Report {
    /// Whether `#[netns_test]`s can run here.
    pub fn can_run(&self) -> bool {
        self.mode != Mode::Unsupported
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "netns-harness doctor")?;
        for check in &self.checks {
            match &check.detail {
                Ok(detail) => writeln!(f, "  ok    {}: {detail}", check.name)?,
                Err(err) => {
                    writeln!(f, "  FAIL  {}: {err}", check.name)?;
                    if let Some(fix) = &check.fix {
                        writeln!(f, "        fix: {fix}")?;
                    }
                }
            }
        }
        match self.mode {
            Mode::Root => writeln!(f, "mode: root; tests create containers directly"),
            Mode::Rootless => writeln!(
                f,
                "mode: rootless; tests create containers in their own user namespace"
            ),
            Mode::Unsupported => writeln!(
                f,
                "mode: none; tests cannot create containers here (fix the failures above)"
            ),
        }
    }
}

/// Runs every check: privileges, the kernel's user-namespace settings, and
/// the creation of a network namespace, a bridge, a veth pair, an
/// nf_tables masquerade rule, a raw socket and finally a container.
pub fn report() -> Report {
    let mut checks = vec![privileges(), user_namespaces(), isolation()];
    let kernel = kernel_objects();
    let objects_ok = kernel.iter().all(|c| c.detail.is_ok());
    checks.extend(kernel);
    let container = container();
    let container_ok = container.detail.is_ok();
    checks.push(container);
    let mode = match rootless::privilege() {
        _ if !(objects_ok && container_ok) => Mode::Unsupported,
        Privilege::Root => Mode::Root,
        Privilege::Rootless => Mode::Rootless,
        Privilege::Disabled | Privilege::Failed(_) => Mode::Unsupported,
    };
    Report { checks, mode }
}

fn privileges() -> Finding {
    const NAME: &str = "privileges";
    match rootless::privilege() {
        Privilege::Root => Finding::ok(NAME, "running as root"),
        Privilege::Rootless => Finding::ok(
            NAME,
            "not root; entered a user namespace of its own before main (rootless mode)",
        ),
        _ => {
            let err = rootless::unsupported(&std::io::Error::from_raw_os_error(libc::EPERM));
            Finding::failed(NAME, &err, "")
        }
    }
}

/// Whether containers are root only in the lab's user namespace.
fn isolation() -> Finding {
    const NAME: &str = "container isolation";
    match rootless::privilege() {
        Privilege::Root | Privilege::Rootless => match crate::kernel::userns::lab_userns() {
            Some(_) => Finding::ok(
                NAME,
                "containers are root only in a user namespace of the lab; their /proc is locked",
            ),
            None => Finding::failed(
                NAME,
                &Error::os(
                    "make the lab's user namespace",
                    std::io::Error::other("refused (the warning above says why)"),
                ),
                "allow user namespaces (user.max_user_namespaces > 0); until then containers hold the test process's privileges over the host",
            ),
        },
        _ => Finding::ok(NAME, "no containers without privileges"),
    }
}

fn user_namespaces() -> Finding {
    let settings = Settings::read();
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".to_owned());
    let restricted = settings.unprivileged_userns_clone.as_deref() == Some("0")
        || settings.max_user_namespaces.as_deref() == Some("0")
        || settings.apparmor_restrict.as_deref() == Some("1");
    Finding::ok(
        "user namespaces",
        format!(
            "{} (kernel.unprivileged_userns_clone={}, user.max_user_namespaces={}, kernel.apparmor_restrict_unprivileged_userns={})",
            if restricted {
                "restricted for unprivileged users: only root can run tests"
            } else {
                "allowed for unprivileged users"
            },
            show(&settings.unprivileged_userns_clone),
            show(&settings.max_user_namespaces),
            show(&settings.apparmor_restrict),
        ),
    )
}

/// Namespace, bridge, veth, nf_tables and raw socket, each made in a
/// throwaway namespace.
fn kernel_objects() -> Vec<Finding> {
    let created = crate::kernel::userns::create_netns(|| {
        let rtnl = Rtnl::open("doctor")?;
        let nft = Socket::open(libc::NETLINK_NETFILTER)
            .map_err(|e| Error::os("open an nf_tables socket", e))?;
        let raw = crate::kernel::sys::raw_socket(
            rustix::net::AddressFamily::INET,
            libc::IPPROTO_ICMP as u8,
        )
        .map(drop)
        .map_err(|e| Error::os("open a raw ICMP socket", e));
        Ok((rtnl, nft, raw))
    });
    let (netns, (mut rtnl, mut nft, raw)) = match created {
        Ok(made) => made,
        Err(err) => {
            return vec![Finding::failed(
                "network namespace",
                &err,
                "the kernel needs CONFIG_NET_NS, and the process root or rootless mode",
            )];
        }
    };
    let mut checks = vec![Finding::ok("network namespace", "created")];
    checks.push(match rtnl.add_bridge("doctor-br", [0x02, 0, 0, 0, 0, 1]) {
        Ok(()) => Finding::ok("bridge", "created"),
        Err(e) => Finding::failed(
            "bridge",
            &e,
            "the kernel needs CONFIG_BRIDGE (modprobe bridge)",
        ),
    });
    let peer = Peer {
        name: "doctor-v1",
        netns: netns.as_fd(),
        mac: None,
    };
    checks.push(match rtnl.add_veth("doctor-v0", None, &peer) {
        Ok(()) => Finding::ok("veth pair", "created"),
        Err(e) => Finding::failed(
            "veth pair",
            &e,
            "the kernel needs CONFIG_VETH (modprobe veth)",
        ),
    });
    let masquerade = crate::DEFAULT_SUBNET.parse().and_then(|subnet| {
        nftables::install_masquerade(&mut nft, nftables::Sources::V4(subnet), crate::UPLINK)
    });
    checks.push(match masquerade {
        Ok(()) => Finding::ok("nf_tables", "masquerade rule installed"),
        Err(e) => Finding::failed(
            "nf_tables",
            &e,
            "the kernel needs CONFIG_NF_TABLES, CONFIG_NFT_NAT and CONFIG_NFT_MASQ (modprobe nft_masq)",
        ),
    });
    checks.push(match raw {
        Ok(()) => Finding::ok("raw sockets", "ICMP raw socket opened"),
        Err(e) => Finding::failed(
            "raw sockets",
            &e,
            "raw sockets need CAP_NET_RAW in the namespace; probes can use TcpMode::Connect",
        ),
    });
    checks
}

/// What the doctor's container runs: nothing, it only has to start and exit.
fn doctor_container() {}

fn container() -> Finding {
    const NAME: &str = "container";
    let attempt = Lab::builder()
        .subnet("10.201.0.0/24")
        .build()
        .and_then(|lab| {
            let mut c = lab.spawn(&Spec::function(doctor_container).name("doctor"))?;
            let status = c.wait_timeout(Duration::from_secs(10))?;
            Ok((c.addr(), status))
        });
    match attempt {
        Ok((addr, Some(status))) if status.success() => Finding::ok(
            NAME,
            format!(
                "lab with bridge, NAT and outside made; container cloned at {addr}, ran and exited 0"
            ),
        ),
        Ok((_, status)) => Finding {
            name: NAME,
            detail: Err(format!("the container did not exit cleanly ({status:?})")),
            fix: Some("run `cargo test` with --nocapture to see its output".to_owned()),
        },
        Err(e) => Finding::failed(NAME, &e, "see the failures above"),
    }
}
