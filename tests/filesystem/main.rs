//! A container's filesystem: its own `/tmp` and `/etc` network files, whose
//! writes never reach the host (checked by hashing the host's files from
//! the test process, as root and as `nobody`) nor another container; the
//! workspace shared; `hostname`, `/etc/hostname` and `domainname` agreeing;
//! a copy-on-write view of everything ([`Fs::Overlay`], in `overlay.rs`);
//! a root directory of its own ([`Spec::root`], in `root.rs`), and the
//! typed errors of one that cannot run the container.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::{needs, read_line, require, run_test_in_child, tool};

/// The host files a body writes.
const WRITTEN: [&str; 3] = ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"];
/// A path in `/tmp` the containers of this file write.
const TMP_FILE: &str = "/tmp/netns-harness-filesystem-test";

/// `sha256sum`'s verdict on `paths`.
fn hashes(paths: &[&str]) -> String {
    let out = tool("sha256sum").args(paths).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Overwrites the host's resolver configuration, hosts and hostname files
/// and a file in `/tmp`, and reads them back: run by
/// [`a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical`].
#[netns_test]
#[ignore = "run by a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical"]
fn writes_etc_and_tmp() {
    for path in WRITTEN.iter().chain([&TMP_FILE]) {
        std::fs::write(path, "written by a container\n").unwrap();
    }
    let seen = sh(&format!("cat {} {TMP_FILE}", WRITTEN.join(" ")));
    assert_eq!(seen, "written by a container\n".repeat(4));
}

#[test]
fn a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical() {
    let host_tmp = Path::new(TMP_FILE).exists();
    let before = hashes(&WRITTEN);
    let run = run_test_in_child("writes_etc_and_tmp", Duration::from_secs(60))
        .expect("the test ended in time");
    assert!(run.status.success(), "{}", run.output);
    assert!(run.output.contains("1 passed"), "{}", run.output);
    assert_eq!(hashes(&WRITTEN), before, "the host's files changed");
    assert_eq!(Path::new(TMP_FILE).exists(), host_tmp, "{TMP_FILE} changed");
}

/// Runs the test `name` of this binary as `nobody`: from a copy of the
/// binary in a world-readable directory under `/tmp` (so that the binary
/// itself lies below a fresh mount and must be passed through), with
/// `setpriv`. When this process is the unprivileged user already (in a
/// user namespace of its own), `test` runs here instead.
fn as_nobody(name: &str, test: fn()) {
    if netns_harness::is_rootless() {
        return test();
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    sh(&format!("chmod 755 {}", dir.path().display()));
    let dir = dir.path();
    let bin = dir.join("filesystem");
    // Copied by another process: a descriptor of ours open for writing
    // could leak into a child another test forks meanwhile, and make the
    // copy "busy" when executed.
    let copied = tool("install")
        .args(["-m", "755"])
        .arg(std::env::current_exe().unwrap())
        .arg(&bin)
        .status()
        .unwrap();
    assert!(copied.success());
    let out = tool("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["--exact", name, "--nocapture"])
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{output}");
    assert!(out.status.success(), "{output}");
    assert!(output.contains("1 passed"), "{output}");
}

#[needs("setpriv")]
#[test]
fn a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical_as_nobody() {
    as_nobody(
        "a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical",
        a_body_writing_etc_and_tmp_leaves_the_hosts_files_byte_identical,
    );
}

/// Two containers at once write their own token to the same path in
/// `/tmp`; once both wrote, each reads its own back.
#[test]
fn two_containers_writing_the_same_tmp_path_do_not_see_each_other() {
    let lab = Lab::shared().unwrap();
    let script = format!("echo $0 > {TMP_FILE}; echo written; read go; cat {TMP_FILE}");
    let mut containers: Vec<(&str, Container)> = ["one", "two"]
        .into_iter()
        .map(|token| {
            let spec = Spec::command("sh")
                .args(["-c", &script, token])
                .stdin(Stdio::Piped)
                .stdout(Stdio::Piped);
            (token, lab.spawn(&spec).unwrap())
        })
        .collect();
    let mut outputs: Vec<_> = containers
        .iter_mut()
        .map(|(_, c)| c.take_stdout().unwrap())
        .collect();
    for stdout in &mut outputs {
        assert_eq!(read_line(&mut *stdout), "written");
    }
    for (_, container) in &mut containers {
        container.take_stdin().unwrap().write_all(b"go\n").unwrap();
    }
    for ((token, _), stdout) in containers.iter().zip(&mut outputs) {
        assert_eq!(read_line(&mut *stdout), *token);
    }
    assert!(!Path::new(TMP_FILE).exists() || !sh(&format!("cat {TMP_FILE}")).contains("one"));
}

/// A directory of the workspace, which containers share with the test
/// process: the test binary's target directory as cargo lays it out (the
/// nearest ancestor holding `CACHEDIR.TAG`), else the binary's own.
fn workspace_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    dir.ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .unwrap_or(dir)
        .to_path_buf()
}

/// Writes the file its argument names.
fn writes_the_file_named() {
    let path = std::env::args().nth(1).unwrap();
    std::fs::write(path, "from a container\n").unwrap();
}

#[test]
fn files_a_container_writes_under_target_are_the_test_processs() {
    let dir = tempfile::tempdir_in(workspace_dir()).unwrap();
    let path = dir.path().join("written");
    let out = Lab::shared()
        .unwrap()
        .spawn(&Spec::function(writes_the_file_named).arg(&path))
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "from a container\n"
    );
}

/// `hostname`, `/etc/hostname` and `domainname` all name the test, and
/// `/tmp`, `/run` and `/var/tmp` are tmpfs mounts of its own; a peer it
/// starts gets its own names and files in turn.
#[needs("hostname", "domainname", "findmnt")]
#[netns_test]
fn names_agree(net: Net) {
    require("hostname");
    require("domainname");
    let names = sh("hostname; cat /etc/hostname; domainname");
    assert_eq!(names, "names_agree\n".repeat(3));
    require("findmnt");
    for dir in ["/tmp", "/run", "/var/tmp"] {
        assert_eq!(
            sh(&format!("findmnt -n -o FSTYPE {dir}")),
            "tmpfs\n",
            "{dir}"
        );
    }
    assert!(!Path::new(TMP_FILE).exists());
    std::fs::write(TMP_FILE, "the body's").unwrap();
    let peer = net
        .spawn(
            &Spec::command("sh")
                .args([
                    "-c",
                    &format!("hostname; cat /etc/hostname; domainname; ls {TMP_FILE}"),
                ])
                .name("peer")
                .stdout(Stdio::Piped),
        )
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    assert!(!peer.status.success(), "the peer saw the body's {TMP_FILE}");
    assert_eq!(String::from_utf8_lossy(&peer.stdout), "peer\n".repeat(3));
}

/// [`Fs::Host`] shares the host's files: the container's `/tmp` is the
/// test process's.
#[test]
fn fs_host_shares_the_hosts_tmp() {
    let path = format!("{TMP_FILE}-host-{}", std::process::id());
    let out = Lab::shared()
        .unwrap()
        .spawn(
            &Spec::command("sh")
                .args(["-c", &format!("echo shared > {path}")])
                .fs(Fs::Host),
        )
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let written = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(written, "shared\n");
}

/// Where [`writes_the_hosts_tmp`] writes.
const HOST_TMP_FILE: &str = "/tmp/netns-harness-filesystem-test-fs-host";

/// `fs = "host"`: writes the host's `/tmp`.
#[netns_test(fs = "host")]
#[ignore = "run by a_body_with_fs_host_writes_the_hosts_tmp"]
fn writes_the_hosts_tmp() {
    std::fs::write(HOST_TMP_FILE, "from a body\n").unwrap();
}

#[test]
fn a_body_with_fs_host_writes_the_hosts_tmp() {
    let _ = std::fs::remove_file(HOST_TMP_FILE);
    let run = run_test_in_child("writes_the_hosts_tmp", Duration::from_secs(60))
        .expect("the test ended in time");
    assert!(run.status.success(), "{}", run.output);
    assert!(run.output.contains("1 passed"), "{}", run.output);
    let written = std::fs::read_to_string(HOST_TMP_FILE).unwrap();
    std::fs::remove_file(HOST_TMP_FILE).unwrap();
    assert_eq!(written, "from a body\n");
}

mod overlay;
mod root;
