//! The programs the suite runs as oracles or helpers, each with what to
//! install when it is missing (Debian package names, as the README lists
//! them). One table for the suite's library (`package_of`), its build
//! script (which finds them) and `#[needs]` (which names them).

/// `(program, what to install to get it)`.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "cargo",
        "Rust's cargo (https://rustup.rs, or `apt-get install cargo`)",
    ),
    (
        "cargo-nextest",
        "cargo-nextest (`cargo install cargo-nextest`)",
    ),
    ("cat", "coreutils"),
    ("conntrack", "conntrack"),
    ("domainname", "hostname"),
    ("findmnt", "util-linux"),
    ("getent", "libc-bin"),
    ("hostname", "hostname"),
    ("install", "coreutils"),
    ("iperf3", "iperf3"),
    ("ip", "iproute2"),
    ("ldd", "libc-bin"),
    ("ls", "coreutils"),
    ("nc", "netcat-openbsd"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
    ("ping", "iputils-ping"),
    ("ps", "procps"),
    ("sed", "sed"),
    ("setpriv", "util-linux"),
    ("sh", "dash"),
    ("sha256sum", "coreutils"),
    ("sleep", "coreutils"),
    ("ss", "iproute2"),
    ("tc", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("turnutils_natdiscovery", "coturn"),
    ("unshare", "util-linux"),
];

/// The `cfg` the build script sets when `program` was found: `has_` and
/// its name, `-` as `_` (`has_cargo_nextest`).
pub fn cfg_name(program: &str) -> String {
    format!("has_{}", program.replace('-', "_"))
}
