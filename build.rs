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
    for (program, package) in tools::TOOLS {
        if dirs.iter().any(|dir| executable(&dir.join(program))) {
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
