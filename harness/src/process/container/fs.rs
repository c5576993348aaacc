//! A container's filesystem ([`Fs`]) and the plan the child follows to
//! make it ([`FsPlan`]): which fresh mounts, which workspace directories
//! stay the host's below them, which files of its own.

use crate::common::error::Result;
use crate::kernel::prexec::{Fresh, FsPlan, MAX_PASSTHROUGH, Passthrough, PrivateFile};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::spec::{cstring, current_exe};

/// What a container sees of the filesystem.
///
/// ```
/// use netns_harness::{Fs, Spec};
/// let shares_everything = Spec::command("true").fs(Fs::Host);
/// # let _ = shares_everything;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fs {
    /// The default: a fresh, empty `tmpfs` on `/tmp`, `/var/tmp` and `/run`,
    /// and private copies of `/etc/hosts`, `/etc/resolv.conf` and
    /// `/etc/hostname` (which holds the container's hostname): what the
    /// container writes there is its own and vanishes with it. Everything
    /// else is the host's, and the cargo workspace stays visible and
    /// writable even where it lies below `/tmp` (the test binary's target
    /// directory, `CARGO_MANIFEST_DIR` and `CARGO_TARGET_DIR`).
    #[default]
    Private,
    /// The host's filesystem as it is: writes anywhere reach the host.
    Host,
}

/// Fresh mounts: where, and their mode.
const FRESH: [(&str, &str); 3] = [
    ("/tmp", "mode=1777"),
    ("/var/tmp", "mode=1777"),
    ("/run", "mode=755"),
];

/// The copied `/etc` files; `/etc/hostname` is written, not copied.
const COPIED: [&str; 2] = ["/etc/hosts", "/etc/resolv.conf"];

/// The plan for `fs` of a container named `name`; `None` for the host's.
pub(super) fn plan(fs: Fs, name: &str) -> Result<Option<FsPlan>> {
    match fs {
        Fs::Host => Ok(None),
        Fs::Private => private(name).map(Some),
    }
}

fn private(name: &str) -> Result<FsPlan> {
    let mut fresh: Vec<PathBuf> = Vec::new();
    let mut plan = FsPlan::default();
    for (dir, data) in FRESH {
        if let Ok(target) = Path::new(dir).canonicalize()
            && target.is_dir()
            && !fresh.contains(&target)
        {
            plan.fresh.push(Fresh {
                target: path_cstring(&target)?,
                data: cstring(data.into(), "mount data")?,
            });
            fresh.push(target);
        }
    }
    let fresh_root = |path: &Path| fresh.iter().find(|root| path.starts_with(root)).cloned();
    let mut shared: Vec<PathBuf> = workspace()
        .into_iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .filter(|dir| fresh_root(dir).is_some_and(|root| *dir != root))
        .collect();
    shared.sort_by_key(|dir| dir.as_os_str().len());
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in shared {
        if kept.len() < MAX_PASSTHROUGH && !kept.iter().any(|k| dir.starts_with(k)) {
            kept.push(dir);
        }
    }
    for dir in kept {
        let Some(root) = fresh_root(&dir) else {
            continue;
        };
        plan.passthrough.push(Passthrough {
            mkdirs: between(&root, &dir)?,
            path: path_cstring(&dir)?,
        });
    }
    let hostname = Path::new("/etc/hostname");
    let mut contents = name.as_bytes().to_vec();
    contents.push(b'\n');
    let files = COPIED
        .iter()
        .filter_map(|path| Some((Path::new(path), std::fs::read(path).ok()?)))
        .chain(hostname.exists().then_some((hostname, contents)));
    let Some(staging_root) = fresh.iter().find(|dir| dir.ends_with("tmp")) else {
        return Ok(plan);
    };
    for (path, contents) in files {
        let Ok(target) = path.canonicalize() else {
            continue;
        };
        let (staging, mkdirs) = match fresh_root(&target) {
            Some(root) => {
                let parent = target.parent().unwrap_or(&root);
                let mkdirs = if parent == root {
                    Vec::new()
                } else {
                    between(&root, parent)?
                };
                (None, mkdirs)
            }
            None => {
                let file = target.file_name().unwrap_or_default().to_string_lossy();
                let staging = staging_root.join(&*file);
                (Some(path_cstring(&staging)?), Vec::new())
            }
        };
        plan.files.push(PrivateFile {
            target: path_cstring(&target)?,
            contents,
            staging,
            mkdirs,
        });
    }
    if plan.files.iter().any(|f| f.staging.is_some()) {
        plan.staging = Some(path_cstring(staging_root)?);
    }
    Ok(plan)
}

/// The directories of the cargo workspace a test may write to: the test
/// binary's target directory (the nearest ancestor holding cargo's
/// `CACHEDIR.TAG`, else the binary's own directory), `CARGO_MANIFEST_DIR`
/// and `CARGO_TARGET_DIR`.
fn workspace() -> Vec<PathBuf> {
    let exe_dir = current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let target = exe_dir.as_ref().map(|dir| {
        dir.ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file())
            .unwrap_or(dir)
            .to_path_buf()
    });
    target
        .into_iter()
        .chain(std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from))
        .chain(std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .collect()
}

/// The directories below `root` down to `dir` (inclusive), outermost
/// first.
fn between(root: &Path, dir: &Path) -> Result<Vec<CString>> {
    let mut dirs: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| *a != root && a.starts_with(root))
        .collect();
    dirs.reverse();
    dirs.into_iter().map(path_cstring).collect()
}

fn path_cstring(path: &Path) -> Result<CString> {
    cstring(path.as_os_str().as_bytes().to_vec(), "path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn between_lists_the_directories_to_create_outermost_first() {
        let dirs = between(Path::new("/tmp"), Path::new("/tmp/a/b/c")).unwrap();
        assert_eq!(dirs, [c"/tmp/a", c"/tmp/a/b", c"/tmp/a/b/c"]);
        assert!(
            between(Path::new("/tmp"), Path::new("/tmp"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_private_plan_mounts_tmp_and_writes_the_hostname() {
        let plan = private("box").unwrap();
        assert!(plan.fresh.iter().any(|f| f.target.as_c_str() == c"/tmp"));
        if Path::new("/etc/hostname").exists() {
            let hostname = plan
                .files
                .iter()
                .find(|f| f.target.as_bytes().ends_with(b"hostname"))
                .unwrap();
            assert_eq!(hostname.contents, b"box\n");
        }
        assert!(plan.passthrough.len() <= MAX_PASSTHROUGH);
    }
}
