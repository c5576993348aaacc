//! Finds the suite's oracles (`ip`, `nft`, `tcpdump`, …, see
//! `src/tools.rs`) in `PATH` and sets `has_<tool>` for each one found, so
//! that a test marked `#[needs("tcpdump")]` is ignored, with the package to
//! install as its reason, on a machine without it: `cargo test` passes
//! there and says what it did not run. With `NETNS_HARNESS_SUITE_ALL_TOOLS=1`
//! (as `.ci/run` sets it) a missing tool fails the build instead, so that
//! every test runs.

use std::path::{Path, PathBuf};

#[path = "src/tools.rs"]
mod tools;

const ALL_TOOLS_VAR: &str = "NETNS_HARNESS_SUITE_ALL_TOOLS";

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The running kernel's configuration (`/proc/config.gz`), if it shows it.
fn kernel_config() -> String {
    println!("cargo::rerun-if-changed=/proc/config.gz");
    std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the kernel has `option` built in, or its module loaded (a
/// module the kernel would have to load cannot be loaded from a user
/// namespace, where rootless tests run).
fn in_kernel(config: &str, option: &str, module: &str) -> bool {
    config.lines().any(|l| l == format!("CONFIG_{option}=y"))
        || Path::new("/sys/module").join(module).exists()
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/tools.rs");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed={ALL_TOOLS_VAR}");
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    // Installing a tool changes its directory: look again then.
    for dir in dirs.iter().filter(|dir| dir.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    let names: Vec<String> = tools::TOOLS
        .iter()
        .map(|(program, _)| tools::cfg_name(program))
        .collect();
    println!("cargo::rustc-check-cfg=cfg({})", names.join(", "));
    let mut missing = Vec::new();
    let config = kernel_config();
    for (program, package) in tools::TOOLS {
        if let Some((_, option, module)) =
            tools::KERNEL_FEATURES.iter().find(|(f, ..)| f == program)
        {
            if in_kernel(&config, option, module) {
                println!("cargo::rustc-cfg={}", tools::cfg_name(program));
            } else {
                println!(
                    "cargo::warning=this kernel has no {program}: the tests that need it are \
                     ignored ({package})"
                );
            }
        } else if dirs.iter().any(|dir| executable(&dir.join(program))) {
            println!("cargo::rustc-cfg={}", tools::cfg_name(program));
        } else {
            missing.push(format!("{program} (install {package})"));
        }
    }
    if missing.is_empty() {
        return;
    }
    let missing = missing.join(", ");
    if std::env::var_os(ALL_TOOLS_VAR).is_some_and(|v| v == "1") {
        eprintln!("{ALL_TOOLS_VAR}=1, but these tools are not in PATH: {missing}");
        std::process::exit(1);
    }
    println!(
        "cargo::warning=not in PATH: {missing}; the tests that need them are \
         ignored, each saying what it needs"
    );
}
