//! [`Spec::root`]: a root directory of the container's own.

use std::path::Path;
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::rootfs::RootDir;
use netns_harness_suite::{HostState, assert_spawn_fails, needs, require};
use rstest::rstest;

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
    // A lab of its own: no other container in its hosts file.
    let lab = Lab::builder().build().unwrap();
    let mut container = lab
        .spawn(
            &Spec::command("sh")
                .args(["-c", &script])
                .root(root.path())
                .fs(fs)
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )
        .unwrap();
    let out = container.output(Duration::from_secs(30)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let sections: Vec<String> = stdout
        .split("--\n")
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    // The root's own hosts file, followed by the lab's hosts in a
    // container's own copy (see tests/names.rs).
    let hosts = match fs {
        Fs::Host => "10.1.2.3 inside".to_owned(),
        _ => format!(
            "10.1.2.3 inside # the lab's hosts (netns-harness), as this container started \
             {gateway} gateway {outside} outside {addr} {name}",
            gateway = lab.gateway(),
            outside = lab.outside_addr(),
            addr = container.addr(),
            name = container.name(),
        ),
    };
    assert_eq!(
        sections,
        [
            top.join(" "),
            ROOT_DEV.to_owned(),
            hosts,
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
