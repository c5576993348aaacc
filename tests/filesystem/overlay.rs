//! [`Fs::Overlay`]: a copy-on-write view of the host's filesystem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::{needs, require, run_test_in_child};

use super::{TMP_FILE, as_nobody, hashes, sh, workspace_dir};

/// A file a container makes in the host's `/etc`, through an overlay.
const NEW_IN_ETC: &str = "/etc/netns-harness-overlay-test";

/// [`Fs::Overlay`]: a container changes its `/etc` files, makes a new file
/// in `/etc` and appends to `/etc/passwd` (where the host's permissions
/// allow: as root; as the unprivileged user the host's root-owned files
/// stay unwritable, as on the host); the host's files are byte-identical
/// afterwards, and the new file is not there.
#[needs("sha256sum", "sh", "findmnt")]
#[test]
fn an_overlay_keeps_every_write_inside() {
    let watched = ["/etc/hosts", "/etc/resolv.conf", "/etc/passwd"];
    let before = hashes(&watched);
    let script = format!(
        "set -e
        [ \"$(findmnt -n -o FSTYPE /usr)\" = overlay ] || {{ echo not an overlay; exit 3; }}
        echo written by a container > /etc/hosts
        echo written by a container > {TMP_FILE}
        echo new > {NEW_IN_ETC}; cat {NEW_IN_ETC}
        if {{ echo netns-harness-test:x:4242:4242::/:/bin/false >> /etc/passwd; }} 2>/dev/null
        then echo passwd changed; grep -c netns-harness-test /etc/passwd
        else echo passwd refused; fi
        pwd"
    );
    let out = Lab::shared()
        .unwrap()
        .spawn(
            &Spec::command("sh")
                .args(["-c", &script])
                .fs(Fs::Overlay)
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let passwd = if netns_harness::is_rootless() {
        "passwd refused\n"
    } else {
        "passwd changed\n1\n"
    };
    let cwd = std::env::current_dir().unwrap();
    let (written, pwd) = stdout.split_at(stdout.len() - cwd.as_os_str().len() - 1);
    assert_eq!(written, format!("new\n{passwd}"));
    // The working directory is the test process's, unless a fresh mount
    // hides it.
    if !["/tmp", "/var/tmp", "/run"]
        .iter()
        .any(|fresh| cwd.starts_with(fresh))
    {
        assert_eq!(pwd.trim_end(), cwd.to_str().unwrap());
    }
    assert_eq!(hashes(&watched), before, "the host's files changed");
    assert!(
        !Path::new(NEW_IN_ETC).exists(),
        "{NEW_IN_ETC} reached the host"
    );
}

#[needs("setpriv", "sha256sum", "sh", "findmnt")]
#[test]
fn an_overlay_keeps_every_write_inside_as_nobody() {
    as_nobody(
        "overlay::an_overlay_keeps_every_write_inside",
        an_overlay_keeps_every_write_inside,
    );
}

/// Where [`writes_through_an_overlay`] writes in the workspace.
fn overlay_body_file() -> PathBuf {
    workspace_dir().join("netns-harness-overlay-body")
}

/// `fs = "overlay"`: the body's `/usr` is an overlay and its `/` a tmpfs of
/// its own; its `/etc/hosts` is a file of the overlay (`sed -i` replaces
/// it); it writes a new file in `/etc` and one in the workspace; a peer
/// with an overlay of the body's view sees the body's `/etc/hosts`
/// (followed by the lab's hosts, itself last) and its own name.
#[netns_test(fs = "overlay")]
#[ignore = "run by a_body_with_fs_overlay_writes_the_workspace_and_nothing_else"]
fn writes_through_an_overlay(net: Net) {
    require("findmnt");
    let types = sh("findmnt -n -o FSTYPE /usr; findmnt -n -o FSTYPE /");
    assert_eq!(types, "overlay\ntmpfs\n");
    require("sed");
    sh("sed -i '$a 10.9.9.9 sedded' /etc/hosts");
    std::fs::write(NEW_IN_ETC, "from an overlay body\n").unwrap();
    std::fs::write(overlay_body_file(), "from an overlay body\n").unwrap();
    let mut peer = net
        .spawn(
            &Spec::command("sh")
                .args([
                    "-c",
                    "findmnt -n -o FSTYPE /usr; cat /etc/hostname; grep -e sedded -e peer /etc/hosts",
                ])
                .fs(Fs::Overlay)
                .name("peer")
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .unwrap();
    let out = peer.output(Duration::from_secs(30)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let own = format!("{}\tpeer", peer.addr());
    assert_eq!(stdout, format!("overlay\npeer\n10.9.9.9 sedded\n{own}\n"));
}

#[needs("findmnt", "sed")]
#[test]
fn a_body_with_fs_overlay_writes_the_workspace_and_nothing_else() {
    let _ = std::fs::remove_file(overlay_body_file());
    let run = run_test_in_child(
        "overlay::writes_through_an_overlay",
        Duration::from_secs(60),
    )
    .expect("the test ended in time");
    assert!(run.status.success(), "{}", run.output);
    assert!(run.output.contains("1 passed"), "{}", run.output);
    let written = std::fs::read_to_string(overlay_body_file()).unwrap();
    std::fs::remove_file(overlay_body_file()).unwrap();
    assert_eq!(written, "from an overlay body\n");
    assert!(
        !Path::new(NEW_IN_ETC).exists(),
        "{NEW_IN_ETC} reached the host"
    );
}
