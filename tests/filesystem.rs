//! A container's filesystem: its own `/tmp` and `/etc` network files, whose
//! writes never reach the host (checked by hashing the host's files from
//! the test process, as root and as `nobody`) nor another container; the
//! workspace shared; `hostname`, `/etc/hostname` and `domainname` agreeing;
//! a copy-on-write view of everything ([`Fs::Overlay`]); a root directory
//! of its own ([`Spec::root`]), and the typed errors of one that cannot
//! run the container.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::rootfs::RootDir;
use netns_harness_suite::{
    HostState, assert_spawn_fails, needs, read_line, require, run_test_in_child, tool,
};
use rstest::rstest;

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
        "an_overlay_keeps_every_write_inside",
        an_overlay_keeps_every_write_inside,
    );
}

/// Where [`writes_through_an_overlay`] writes in the workspace.
fn overlay_body_file() -> PathBuf {
    workspace_dir().join("netns-harness-overlay-body")
}

/// `fs = "overlay"`: the body's `/usr` is an overlay and its `/` a tmpfs of
/// its own; it writes a new file in `/etc` and one in the workspace.
#[netns_test(fs = "overlay")]
#[ignore = "run by a_body_with_fs_overlay_writes_the_workspace_and_nothing_else"]
fn writes_through_an_overlay() {
    require("findmnt");
    let types = sh("findmnt -n -o FSTYPE /usr; findmnt -n -o FSTYPE /");
    assert_eq!(types, "overlay\ntmpfs\n");
    std::fs::write(NEW_IN_ETC, "from an overlay body\n").unwrap();
    std::fs::write(overlay_body_file(), "from an overlay body\n").unwrap();
}

#[needs("findmnt")]
#[test]
fn a_body_with_fs_overlay_writes_the_workspace_and_nothing_else() {
    let _ = std::fs::remove_file(overlay_body_file());
    let run = run_test_in_child("writes_through_an_overlay", Duration::from_secs(60))
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

/// The device nodes and links of a root's `/dev`, as `ls` lists them.
const ROOT_DEV: &str = "fd full null random shm stderr stdin stdout tty urandom zero";

/// A program in a root directory (`ls` and `sh` copied there with their
/// libraries) lists only the root's entries, a `/dev` of its own and the
/// root's `/etc/hosts`, and cannot reach the host's files. Its writes to
/// `/written`, `/tmp/written` and `/etc/hosts` reach the directory as its
/// [`Fs`] says: all with `Host`, none with `Overlay`, only the first with
/// `Private`.
#[rstest]
#[case::private(Fs::Private, [true, false, false])]
#[case::overlay(Fs::Overlay, [false, false, false])]
#[case::host(Fs::Host, [true, true, true])]
#[needs("ldd", "ls", "sh")]
fn a_program_in_a_root_sees_only_that_root(#[case] fs: Fs, #[case] reach_the_dir: [bool; 3]) {
    let root = RootDir::new();
    root.install(require("ls")).install(require("sh"));
    std::fs::write(root.path().join("etc/hosts"), "10.1.2.3 inside\n").unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "ls -A /; echo --; ls /dev; echo --; while read -r l; do echo \"$l\"; done </etc/hosts; echo --
        [ -e {exe} ] || echo the test binary is unreachable
        [ -e {manifest} ] || echo the workspace is unreachable
        echo written > /written; echo written > /tmp/written; echo written >> /etc/hosts",
        exe = exe.display(),
        manifest = env!("CARGO_MANIFEST_DIR"),
    );
    let top = root.top();
    let out = Lab::shared()
        .unwrap()
        .spawn(
            &Spec::command("sh")
                .args(["-c", &script])
                .root(root.path())
                .fs(fs)
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let sections: Vec<String> = stdout
        .split("--\n")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        sections,
        [
            top.join(" "),
            ROOT_DEV.to_owned(),
            "10.1.2.3 inside".to_owned(),
            "the test binary is unreachable the workspace is unreachable".to_owned(),
        ]
    );
    let hosts = std::fs::read_to_string(root.path().join("etc/hosts")).unwrap();
    let reached = [
        root.path().join("written").exists(),
        root.path().join("tmp/written").exists(),
        hosts.contains("written"),
    ];
    assert_eq!(reached, reach_the_dir);
}

/// Prints the names at the top of its root, sorted, and whether the test
/// binary's path exists there.
fn lists_its_root() {
    let mut names: Vec<String> = std::fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let exe = std::env::args().next().unwrap();
    println!("{} {}", names.join(" "), Path::new(&exe).exists());
}

/// A Rust function runs in a root that holds the test binary's loader and
/// libraries, but not the binary itself.
#[needs("ldd")]
#[test]
fn a_function_runs_in_a_root() {
    let root = RootDir::new();
    root.install_libraries_of(std::env::current_exe().unwrap());
    let out = Lab::shared()
        .unwrap()
        .spawn(
            &Spec::function(lists_its_root)
                .root(root.path())
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .unwrap()
        .output(Duration::from_secs(30))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(stdout, format!("{} false\n", root.top().join(" ")));
}

/// A root that cannot run the container: `make` prepares it; spawning
/// fails naming what is missing, before anything is made (no port, the
/// address free, the host's network and the root unchanged).
#[rstest]
#[case::missing_dir(|_: &RootDir| (), "/nonexistent", Spec::command("ls"), "it does not exist")]
#[case::no_proc(
    |r: &RootDir| std::fs::remove_dir(r.path().join("proc")).unwrap(),
    "",
    Spec::command("ls"),
    "it has no directory /proc (the container's /proc, /sys and /dev are mounted there); fix: mkdir "
)]
#[case::no_program(|_: &RootDir| (), "", Spec::command("ls"), "it has no program \"ls\" in the container's PATH")]
#[case::no_loader(
    |r: &RootDir| { r.copy(&require("ls")); },
    "",
    Spec::command("ls"),
    "the dynamic loader of /"
)]
#[case::no_interpreter(
    |r: &RootDir| {
        let script = r.path().join("etc/script");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    },
    "",
    Spec::command("/etc/script"),
    "it has no /bin/sh, the interpreter of /etc/script; fix: install /bin/sh in the root"
)]
#[case::function_without_loader(|_: &RootDir| (), "", Spec::function(lists_its_root), "the dynamic loader of the test binary")]
#[needs("nsenter", "ip", "ping", "nft", "ls")]
fn a_root_that_cannot_run_the_container_is_refused_before_anything_is_made(
    #[case] make: fn(&RootDir),
    #[case] dir: &str,
    #[case] spec: Spec,
    #[case] message: &str,
) {
    let root = RootDir::new();
    make(&root);
    let dir = if dir.is_empty() {
        root.path()
    } else {
        Path::new(dir)
    };
    let top = root.top();
    let before = HostState::capture();
    let err = assert_spawn_fails(spec.root(dir), message);
    assert!(
        matches!(err, netns_harness::Error::InvalidRoot { .. }),
        "{err}"
    );
    HostState::capture().assert_unchanged(&before);
    assert_eq!(root.top(), top);
}
