//! Root filesystems for containers ([`netns_harness::Spec::root`]), made
//! of this machine's own programs: each copied with the dynamic loader and
//! the libraries `ldd` lists for it, at the same paths.

use std::path::{Path, PathBuf};

use crate::tool;

/// A root directory in a temporary directory of the host's, removed
/// when dropped.
///
/// ```no_run
/// use netns_harness::{Lab, Spec};
/// use netns_harness_suite::rootfs::RootDir;
///
/// let root = RootDir::new();
/// root.install("/usr/bin/ls");
/// let ls = Lab::shared()?.spawn(&Spec::command("ls").root(root.path()))?;
/// # Ok::<(), netns_harness::Error>(())
/// ```
#[derive(Debug)]
pub struct RootDir {
    dir: tempfile::TempDir,
}

/// The directories a new root has: the places of the container's `/proc`,
/// `/sys` and `/dev`, and `/tmp` and `/etc`.
pub const SKELETON: [&str; 5] = ["proc", "sys", "dev", "tmp", "etc"];

impl RootDir {
    /// A root holding only the [`SKELETON`]'s directories.
    pub fn new() -> RootDir {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        for sub in SKELETON {
            std::fs::create_dir(dir.path().join(sub)).expect("create a directory of the root");
        }
        RootDir { dir }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `program` (a path of this machine) into the root at the same
    /// path, with the loader and libraries `ldd` lists for it
    /// ([`RootDir::install_libraries_of`]).
    pub fn install(&self, program: impl AsRef<Path>) -> &Self {
        self.copy(program.as_ref())
            .install_libraries_of(program.as_ref())
    }

    /// Copies the loader and libraries `ldd` lists for `program` into the
    /// root at the same paths (none for a statically linked program).
    /// Panics if `ldd` fails otherwise.
    pub fn install_libraries_of(&self, program: impl AsRef<Path>) -> &Self {
        let program = program.as_ref();
        let out = tool("ldd").arg(program).output().expect("run ldd");
        let listing = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<PathBuf> = if out.status.success() {
            // `libc.so.6 => /lib/…/libc.so.6 (0x…)` and `/lib64/ld-….so.2 (0x…)`
            listing
                .split_whitespace()
                .filter(|word| word.starts_with('/'))
                .map(PathBuf::from)
                .collect()
        } else {
            assert!(
                listing.contains("not a dynamic executable")
                    || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable"),
                "ldd {}: {out:?}",
                program.display()
            );
            Vec::new()
        };
        for file in needed {
            self.copy(&file);
        }
        self
    }

    /// Copies `file` (following symbolic links) to the same path in the
    /// root, with its permissions.
    pub fn copy(&self, file: &Path) -> &Self {
        let inside = self.path().join(file.strip_prefix("/").unwrap_or(file));
        std::fs::create_dir_all(inside.parent().expect("a file has a parent"))
            .expect("create a directory of the root");
        std::fs::copy(file, &inside)
            .unwrap_or_else(|e| panic!("copy {} into the root: {e}", file.display()));
        self
    }

    /// The names at the root's top, sorted, as `ls -A /` lists them.
    pub fn top(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .expect("read the root")
            .map(|e| {
                e.expect("read the root")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Default for RootDir {
    fn default() -> Self {
        Self::new()
    }
}
