//! The walkthrough's mini container with a filesystem of its own: builds a
//! small root directory from this machine's `sh`, `ls`, `cat` and
//! `hostname` (each copied with the dynamic loader and libraries `ldd`
//! lists for it), runs a shell in a container that `pivot_root`s into it
//! ([`Spec::root`]), and shows that the shell sees that root and nothing of
//! the host's: its `/`, its `/dev`, its processes, and a host path that is
//! not there. The directory is removed at the end.
//!
//! `cargo run --example rootfs` (needs `ldd`, from libc-bin, and the four
//! programs; root or rootless mode)

use std::time::Duration;

use netns_harness::{Lab, Spec, Stdio};
use netns_harness_suite::require;
use netns_harness_suite::rootfs::RootDir;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = RootDir::new();
    for program in ["sh", "ls", "cat", "hostname"] {
        root.install(require(program));
    }
    std::fs::write(
        root.path().join("etc/motd"),
        "hello from the root directory\n",
    )?;
    println!(
        "root directory {}: {}",
        root.path().display(),
        root.top().join(" ")
    );
    let host_path = std::env::current_exe()?;
    let script = format!(
        "cat /etc/motd
        echo I am $(hostname), pid $$
        echo my / holds: $(ls -A /)
        echo my /dev holds: $(ls /dev)
        for p in /proc/[0-9]*; do read -r name <$p/comm; echo process ${{p#/proc/}}: $name; done
        [ -e {host} ] && echo the host\\'s {host} is here || echo the host\\'s {host} is not here",
        host = host_path.display()
    );
    let lab = Lab::shared()?;
    let output = lab
        .spawn(
            &Spec::command("sh")
                .args(["-c", &script])
                .root(root.path())
                .name("mini")
                .stdout(Stdio::Piped)
                .stderr_to_stdout(),
        )?
        .output(Duration::from_secs(10))?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        return Err(format!("the container failed: {}", output.status).into());
    }
    Ok(())
}
