//! Names: a container finds the lab's hosts by name with libc's resolver
//! (`getent hosts`, `ping`, `ToSocketAddrs` in a body) in its own
//! `/etc/hosts` (the host's lines kept, the host's file untouched), with
//! each filesystem; `Lab::resolve` and `Net::resolve` agree; aliases work;
//! a later container is not in an earlier one's file; bad names are typed
//! errors that leave nothing behind.
//!
//! The tests share this binary's lab: each uses names of its own.

use std::io::Write;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness::{Error, GATEWAY_NAME, OUTSIDE_NAME};
use netns_harness_suite::rootfs::RootDir;
use netns_harness_suite::{needs, require, tool};

/// A bound, not an expectation: `getent hosts` asks for an IPv6 address
/// first, which no lab host has, so it asks the DNS server of
/// `/etc/resolv.conf` too, which a lab may not reach (5 s per name where
/// nothing says so at once).
const TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `spec` in a new container of `lab`: its address, exit code and
/// output (standard error with it).
fn run(lab: &Lab, spec: Spec) -> (IpAddr, Option<i32>, String) {
    let mut container = lab
        .spawn(&spec.stdout(Stdio::Piped).stderr_to_stdout())
        .expect("spawn");
    let out = container.output(TIMEOUT).expect("output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (container.addr(), out.status.code(), text)
}

fn sleeper(lab: &Lab, spec: Spec) -> Container {
    lab.spawn(&spec.arg("600")).expect("spawn a sleeper")
}

/// `getent hosts` for each of `names`, all at once (each line is one
/// write to the pipe): its lines, and "NAME missing" for a name it did
/// not find.
fn getent_script(names: &[&str]) -> Spec {
    let script = format!(
        "for n in {}; do (getent hosts $n || echo \"$n missing\") & done; wait",
        names.join(" ")
    );
    Spec::command("sh").args(["-c", &script])
}

/// Whether `getent hosts` printed `addr` for `name`.
fn found(out: &str, name: &str, addr: IpAddr) -> bool {
    out.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(&addr.to_string()) && words.any(|w| w == name)
    })
}

#[needs("getent", "sh")]
#[test]
fn getent_finds_the_gateway_the_outside_earlier_containers_and_itself() {
    let lab = Lab::shared().unwrap();
    let web = sleeper(
        &lab,
        Spec::command("sleep").name("web").alias("www.web.test"),
    );
    for fs in [Fs::Private, Fs::Overlay] {
        let names = ["gateway", "outside", "web", "www.web.test", "asker"];
        let spec = getent_script(&names).name("asker").fs(fs);
        let (addr, code, out) = run(&lab, spec);
        assert_eq!(code, Some(0), "{fs:?}: {out}");
        for (name, expected) in [
            (GATEWAY_NAME, lab.gateway()),
            (OUTSIDE_NAME, lab.outside_addr()),
            ("web", web.addr()),
            ("www.web.test", web.addr()),
            ("asker", addr),
        ] {
            assert!(found(&out, name, expected), "{fs:?}: {name}: {out}");
        }
        // The host's lines are kept: localhost still resolves (with
        // getaddrinfo, which asks DNS nothing once the file answers).
        let spec = Spec::command("getent").args(["ahosts", "localhost"]).fs(fs);
        let (_, code, out) = run(&lab, spec);
        assert!(
            code == Some(0) && out.contains("localhost"),
            "{fs:?}: {out}"
        );
        assert_eq!(
            lab.resolve("www.web.test").unwrap(),
            [web.addr()],
            "resolve agrees with the file"
        );
    }
}

#[needs("getent")]
#[test]
fn a_container_on_the_hosts_files_gets_no_lab_names() {
    let lab = Lab::shared().unwrap();
    let _named = sleeper(&lab, Spec::command("sleep").alias("only.in.lab.test"));
    let spec = Spec::command("getent").args(["hosts", "only.in.lab.test"]);
    let (_, code, out) = run(&lab, spec.clone().fs(Fs::Host));
    assert_eq!(code, Some(2), "the host's /etc/hosts knew the name: {out}");
    let (_, code, out) = run(&lab, spec);
    assert_eq!(code, Some(0), "a private /etc/hosts did not: {out}");
}

#[needs("cat")]
#[test]
fn a_root_directorys_hosts_file_gets_the_lab_names_after_its_own_lines() {
    let lab = Lab::shared().unwrap();
    let root = RootDir::new();
    root.install(require("cat"));
    std::fs::write(root.path().join("etc/hosts"), "127.0.0.1 rooted-localhost").unwrap();
    let spec = Spec::command("cat").arg("/etc/hosts").root(root.path());
    let (addr, code, out) = run(&lab, spec.name("rooted"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("127.0.0.1 rooted-localhost\n"), "{out}");
    assert!(
        out.contains(&format!("\n{}\tgateway\n", lab.gateway())),
        "{out}"
    );
    assert!(out.ends_with(&format!("\n{addr}\trooted\n")), "{out}");
}

#[needs("getent", "sh")]
#[test]
fn a_later_container_is_not_in_an_earlier_ones_file_but_resolve_finds_it() {
    let lab = Lab::shared().unwrap();
    let mut early = lab
        .spawn(
            &Spec::command("sh")
                .args(["-c", "read go; getent hosts late; echo \"status $?\""])
                .stdin(Stdio::Piped)
                .stdout(Stdio::Piped),
        )
        .unwrap();
    let late = sleeper(&lab, Spec::command("sleep").name("late"));
    assert_eq!(lab.resolve("late").unwrap(), [late.addr()]);
    early.take_stdin().unwrap().write_all(b"go\n").unwrap();
    let out = early.output(TIMEOUT).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "status 2\n");
    let (_, code, out) = run(&lab, getent_script(&["late"]));
    assert!(code == Some(0) && found(&out, "late", late.addr()), "{out}");
}

#[needs("ping")]
#[test]
fn ping_by_name_reaches_a_peer_and_the_gateway() {
    let lab = Lab::shared().unwrap();
    let target = sleeper(
        &lab,
        Spec::command("sleep").name("pingme").alias("ping.me.test"),
    );
    for name in ["ping.me.test", "pingme", "gateway"] {
        let spec = Spec::command("ping").args(["-c1", "-W5", name]);
        let (_, code, out) = run(&lab, spec);
        assert_eq!(code, Some(0), "ping {name}: {out}");
        let expected = if name == "gateway" {
            lab.gateway()
        } else {
            target.addr()
        };
        assert!(out.contains(&format!("({expected})")), "ping {name}: {out}");
    }
}

fn lookup(name: &str) -> std::io::Result<Vec<IpAddr>> {
    Ok((name, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
}

#[needs("getent", "sh")]
#[netns_test]
fn a_body_finds_names_with_libc_and_resolve(net: Net) {
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap();
    let hostname = hostname.trim();
    // libc, through this container's /etc/hosts.
    assert!(lookup(hostname).unwrap().contains(&net.addr()));
    assert!(lookup("localhost").unwrap().iter().any(IpAddr::is_loopback));
    assert!(lookup("gateway").unwrap().contains(&net.gateway()));
    assert!(lookup("outside").unwrap().contains(&net.outside_addr()));
    // The registry the runner passed on, and this body's own peers.
    assert_eq!(net.resolve(hostname).unwrap(), [net.addr()]);
    let peer = net
        .spawn(
            &Spec::command("sleep")
                .arg("600")
                .name("bodypeer")
                .alias("peer.body.test"),
        )
        .unwrap();
    assert_eq!(net.resolve("peer.body.test").unwrap(), [peer.addr()]);
    let (_, code, out) = run(net.lab(), getent_script(&["peer.body.test", hostname]));
    assert_eq!(code, Some(0), "{out}");
    assert!(found(&out, "peer.body.test", peer.addr()), "{out}");
    assert!(found(&out, hostname, net.addr()), "{out}");
    // This container's own file was written before the peer started.
    assert!(lookup("peer.body.test").is_err());
    drop(peer);
    assert!(matches!(
        net.resolve("peer.body.test"),
        Err(Error::UnknownName { .. })
    ));
}

#[needs("sha256sum", "getent")]
#[test]
fn the_hosts_etc_hosts_is_byte_identical_after_named_containers() {
    let hash = || {
        let out = tool("sha256sum").arg("/etc/hosts").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let before = hash();
    let lab = Lab::shared().unwrap();
    for fs in [Fs::Private, Fs::Overlay] {
        let spec = Spec::command("getent")
            .args(["hosts", "hashed.test"])
            .alias("hashed.test")
            .fs(fs);
        let (_, code, out) = run(&lab, spec);
        assert_eq!(code, Some(0), "{fs:?}: {out}");
    }
    assert_eq!(hash(), before, "the host's /etc/hosts changed");
    let host = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!host.contains("hashed.test"), "{host}");
}

#[test]
fn bad_names_are_typed_errors_that_leave_nothing_behind() {
    // One container address: a leaked lease would make the last spawn fail.
    let lab = Lab::builder().subnet("10.77.0.0/30").build().unwrap();
    let sleep = || Spec::command("sleep").arg("600").name("refused");
    for alias in ["bad_name", "a..b", "-x", "x.", &"a".repeat(64)] {
        match lab.spawn(&sleep().alias(alias)) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!(name, alias);
                assert!(reason.contains("a host name is labels"), "{reason}");
            }
            other => panic!("{alias:?}: {other:?}"),
        }
    }
    let holder = lab
        .spawn(
            &Spec::command("sleep")
                .arg("600")
                .name("holder")
                .alias("taken.test")
                .alias("api"),
        )
        .unwrap();
    for (spec, holder_text) in [
        (
            sleep().alias("TAKEN.test"),
            "an alias of container \"holder\"",
        ),
        (sleep().alias("holder"), "the name of container \"holder\""),
        (
            sleep().alias("gateway"),
            "the name of the lab's gateway host",
        ),
        (
            sleep().name("outside"),
            "the name of the lab's outside host",
        ),
        (sleep().name("api"), "an alias of container \"holder\""),
        (sleep().alias("twice").alias("twice"), "given twice"),
        (sleep().alias("refused"), "this container's own name"),
    ] {
        let err = lab.spawn(&spec).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::DuplicateName { .. }), "{err:?}");
        assert!(text.contains(holder_text), "{text}");
        assert!(text.contains("choose another name or alias"), "{text}");
    }
    let err = lab.resolve("refused").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host of the lab is named \"refused\"; the lab's names are: \
         gateway, outside, holder, taken.test, api"
    );
    drop(holder);
    let again = lab.spawn(&sleep().alias("taken.test")).unwrap();
    assert_eq!(lab.resolve("taken.test").unwrap(), [again.addr()]);
}

#[needs("getent", "sh")]
#[test]
fn an_alias_of_a_process_on_the_outside_host_names_the_outside_address() {
    let lab = Lab::shared().unwrap();
    let server = lab
        .spawn_outside(&Spec::command("sleep").arg("600").alias("example.test"))
        .unwrap();
    let outside = lab.outside_addr();
    assert_eq!(lab.resolve("example.test").unwrap(), [outside]);
    let (_, code, out) = run(&lab, getent_script(&["example.test"]));
    assert!(
        code == Some(0) && found(&out, "example.test", outside),
        "{out}"
    );
    drop(server);
    assert!(matches!(
        lab.resolve("example.test"),
        Err(Error::UnknownName { .. })
    ));
}
