//! A container's filesystem ([`Fs`], and the root of
//! [`Spec::root`](crate::Spec::root)) and the plan the child follows to
//! make it ([`FsPlan`]): a new root to pivot into, which fresh mounts,
//! which trees it keeps (`/proc`, `/sys`, `/dev`, the workspace), which
//! files of its own.

use crate::common::error::{Error, Result};
use crate::kernel::prexec::{
    Carried, Fresh, FsPlan, MAX_CARRIED, MAX_PASSTHROUGH, NewRoot, PrivateFile, Symlink,
};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::spec::{cstring, current_exe};

mod base;
mod elf;
mod overlay;
mod root;
use base::Base;
pub(super) use base::open_program;
pub(super) use root::Root;

/// What a container sees of the filesystem.
///
/// ```
/// use netns_harness::{Fs, Spec};
/// let shares_everything = Spec::command("true").fs(Fs::Host);
/// let copy_on_write = Spec::command("true").fs(Fs::Overlay);
/// # let _ = (shares_everything, copy_on_write);
/// ```
///
/// In a root directory ([`Spec::root`](crate::Spec::root)) it applies to
/// that root instead of the host's: [`Fs::Private`] gives the root's
/// `/tmp`, `/run` and `/var/tmp` (those it has) fresh mounts and the
/// container private copies of the root's `/etc` files, [`Fs::Overlay`]
/// makes the whole root copy-on-write, and [`Fs::Host`] uses it as it is
/// (writes reach the directory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fs {
    /// The default: a fresh, empty `tmpfs` on `/tmp`, `/var/tmp` and `/run`,
    /// and private copies of `/etc/hosts` (followed by the lab's hosts:
    /// see [`Lab::spawn`](crate::Lab::spawn)), `/etc/resolv.conf` and
    /// `/etc/hostname` (which holds the container's hostname): what the
    /// container writes there is its own and vanishes with it. Everything
    /// else is the host's, and the cargo workspace stays visible and
    /// writable even where it lies below `/tmp` (the test binary's target
    /// directory, `CARGO_MANIFEST_DIR` and `CARGO_TARGET_DIR`).
    #[default]
    Private,
    /// [`Fs::Private`] over a copy-on-write view of the whole host
    /// filesystem: writes anywhere (a new file in `/etc`, a change in
    /// `/usr`) land in a private `tmpfs` and vanish with the container,
    /// where the host's permissions allow them (a rootless test cannot
    /// change the host's root-owned files there either). The workspace
    /// is the host's, shared and writable; `/proc`, `/sys` and `/dev` are
    /// the container's own, `/dev` with the host's devices and a fresh
    /// `/dev/shm`. Needs overlayfs in user namespaces (Linux 5.11 or
    /// later); otherwise spawning fails with
    /// [`Error::OverlayUnavailable`](crate::Error::OverlayUnavailable).
    Overlay,
    /// The host's filesystem as it is: writes anywhere reach the host. Its
    /// `/etc/hosts` is the host's, without the lab's names.
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

/// The device nodes of a root's `/dev`, bound from the host's.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The links of a root's `/dev`: where, and to what.
const DEV_LINKS: [(&str, &str); 4] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
];

/// The plan for `fs` of a container named `name`, in `root` when given,
/// whose `/etc/hosts` ends with the lab's `hosts` lines; `None` for the
/// host's filesystem as it is.
pub(super) fn plan(
    fs: Fs,
    root: Option<&Root>,
    name: &str,
    hosts: &[u8],
) -> Result<Option<FsPlan>> {
    let host;
    let base = match root {
        Some(root) => root.base(),
        None if fs == Fs::Host => return Ok(None),
        None => {
            host = Base::host().map_err(|e| Error::os("open the root directory", e))?;
            &host
        }
    };
    // A new root: the given one, or an overlay.
    let pivot = root.is_some() || fs == Fs::Overlay;
    let mut plan = FsPlan::default();
    if pivot {
        for dir in ["/proc", "/sys"] {
            plan.early.push(carried(Path::new(dir), Vec::new(), false)?);
        }
    }
    if root.is_some() {
        dev(&mut plan)?;
    } else if pivot {
        plan.early
            .push(carried(Path::new("/dev"), Vec::new(), false)?);
        plan.fresh
            .push(fresh(Path::new("/dev/shm"), "mode=1777", Vec::new())?);
    }
    let fresh_dirs = if fs == Fs::Host {
        Vec::new()
    } else {
        fresh_dirs(base)
    };
    for (dir, data) in &fresh_dirs {
        plan.fresh.push(fresh(dir, data, Vec::new())?);
    }
    let fresh_dirs: Vec<PathBuf> = fresh_dirs.into_iter().map(|(dir, _)| dir).collect();
    let fresh_root = |path: &Path| fresh_dirs.iter().find(|root| path.starts_with(root));
    let workspace = if base.is_host() {
        workspace(&fresh_dirs, pivot)
    } else {
        Vec::new()
    };
    for dir in &workspace {
        let mkdirs = match fresh_root(dir) {
            Some(root) => between(root, dir)?,
            None => Vec::new(),
        };
        plan.late.push(carried(dir, mkdirs, false)?);
    }
    let mut overlay = if fs == Fs::Overlay {
        let excluded: Vec<PathBuf> = ["/proc", "/sys", "/dev"]
            .into_iter()
            .map(PathBuf::from)
            .chain(fresh_dirs.iter().cloned())
            .chain(workspace)
            .collect();
        Some(overlay::plan(base, &excluded)?)
    } else {
        None
    };
    if fs != Fs::Host {
        let names = Names {
            hostname: name,
            hosts,
        };
        files(base, names, &fresh_dirs, &mut plan, overlay.as_mut())?;
    }
    if pivot {
        plan.root = Some(match overlay {
            Some(overlay) => NewRoot::Overlay(overlay.tree),
            None => NewRoot::Bind(path_cstring(base.dir())?),
        });
        // In a view of the host's filesystem, the container starts where
        // the test process is (cargo runs tests in the package's
        // directory); in a root directory, at its root.
        if base.is_host() {
            plan.cwd = std::env::current_dir()
                .ok()
                .map(|dir| path_cstring(&dir))
                .transpose()?;
        }
    }
    // Three trees early, six device nodes and the workspace late.
    debug_assert!(plan.early.len() + plan.late.len() <= MAX_CARRIED);
    Ok(Some(plan))
}

/// A tree of the test process's view at `path`, carried to the same path.
fn carried(path: &Path, mkdirs: Vec<CString>, file: bool) -> Result<Carried> {
    let path = path_cstring(path)?;
    Ok(Carried {
        source: path.clone(),
        target: path,
        mkdirs,
        file,
    })
}

fn fresh(target: &Path, data: &str, mkdirs: Vec<CString>) -> Result<Fresh> {
    Ok(Fresh {
        target: path_cstring(target)?,
        data: cstring(data.into(), "mount data")?,
        mkdirs,
    })
}

/// A root's minimal `/dev`: a fresh `tmpfs` with the host's device nodes
/// bound into it, its links and a fresh `/dev/shm`.
fn dev(plan: &mut FsPlan) -> Result<()> {
    plan.fresh
        .push(fresh(Path::new("/dev"), "mode=755", Vec::new())?);
    let shm = Path::new("/dev/shm");
    plan.fresh
        .push(fresh(shm, "mode=1777", vec![path_cstring(shm)?])?);
    for node in DEV_NODES {
        let path = Path::new("/dev").join(node);
        if path.exists() {
            plan.late.push(carried(&path, Vec::new(), true)?);
        }
    }
    for (path, to) in DEV_LINKS {
        plan.symlinks.push(Symlink {
            to: path_cstring(Path::new(to))?,
            path: path_cstring(Path::new(path))?,
        });
    }
    Ok(())
}

/// The fresh mounts `base` has room for: their paths as the container
/// sees them (symbolic links followed, each once), and their mount data.
fn fresh_dirs(base: &Base) -> Vec<(PathBuf, &'static str)> {
    let mut dirs: Vec<(PathBuf, &str)> = Vec::new();
    for (dir, data) in FRESH {
        if let Some(target) = base.resolve(Path::new(dir))
            && base.outside(&target).is_dir()
            && !dirs.iter().any(|(d, _)| *d == target)
        {
            dirs.push((target, data));
        }
    }
    dirs
}

/// The workspace directories to carry: all of them in a new root,
/// otherwise those below a fresh mount; nested ones once, at most
/// [`MAX_PASSTHROUGH`]. A directory that is itself a fresh mount's is not
/// kept.
fn workspace(fresh: &[PathBuf], all: bool) -> Vec<PathBuf> {
    let below_fresh = |dir: &Path| fresh.iter().any(|f| dir.starts_with(f) && dir != f);
    let mut dirs: Vec<PathBuf> = workspace_dirs()
        .into_iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .filter(|dir| !fresh.contains(dir) && (all || below_fresh(dir)))
        .collect();
    dirs.sort_by_key(|dir| dir.as_os_str().len());
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if kept.len() < MAX_PASSTHROUGH && !kept.iter().any(|k| dir.starts_with(k)) {
            kept.push(dir);
        }
    }
    kept
}

/// What a container's `/etc` files say of names.
#[derive(Clone, Copy)]
struct Names<'a> {
    /// Its hostname, for `/etc/hostname`.
    hostname: &'a str,
    /// The lab's hosts, appended to its `/etc/hosts`.
    hosts: &'a [u8],
}

/// The container's own `/etc/hosts` (a copy of `base`'s with the lab's
/// hosts after it), `/etc/resolv.conf` (a copy of `base`'s) and
/// `/etc/hostname` (its name), where `base` has them:
/// written in place when they lie below a fresh mount, in the upper
/// directory of an `overlay` that holds them, and otherwise bind-mounted
/// from a staging `tmpfs` (in the first fresh `…tmp`; without one, they
/// stay `base`'s).
fn files(
    base: &Base,
    names: Names<'_>,
    fresh: &[PathBuf],
    plan: &mut FsPlan,
    mut overlay: Option<&mut overlay::Overlay>,
) -> Result<()> {
    let fresh_root = |path: &Path| fresh.iter().find(|root| path.starts_with(root));
    let staging_root = fresh.iter().find(|dir| dir.ends_with("tmp"));
    let mut hostname = names.hostname.as_bytes().to_vec();
    hostname.push(b'\n');
    let copies = COPIED.iter().filter_map(|path| {
        let target = base.resolve(Path::new(path))?;
        let mut contents = std::fs::read(base.outside(&target)).ok()?;
        if *path == "/etc/hosts" && !names.hosts.is_empty() {
            if contents.last().is_some_and(|&b| b != b'\n') {
                contents.push(b'\n');
            }
            contents.extend_from_slice(names.hosts);
        }
        Some((target, contents))
    });
    let named = base
        .resolve(Path::new("/etc/hostname"))
        .map(|target| (target, hostname));
    for (target, contents) in copies.chain(named) {
        let (staging, mkdirs) = if let Some(root) = fresh_root(&target) {
            let parent = target.parent().unwrap_or(root);
            let mkdirs = if parent == root {
                Vec::new()
            } else {
                between(root, parent)?
            };
            (None, mkdirs)
        } else if let Some(overlay) = overlay.as_deref_mut()
            && overlay.write_in_upper(&target, &contents)?
        {
            continue;
        } else if let Some(staging_root) = staging_root {
            let file = target.file_name().unwrap_or_default().to_string_lossy();
            (Some(path_cstring(&staging_root.join(&*file))?), Vec::new())
        } else {
            continue;
        };
        plan.files.push(PrivateFile {
            target: path_cstring(&target)?,
            contents,
            staging,
            mkdirs,
        });
    }
    if let Some(staging_root) = staging_root
        && plan.files.iter().any(|f| f.staging.is_some())
    {
        plan.staging = Some(path_cstring(staging_root)?);
    }
    Ok(())
}

/// The directories of the cargo workspace a test may write to: the test
/// binary's target directory (the nearest ancestor holding cargo's
/// `CACHEDIR.TAG`, else the binary's own directory), `CARGO_MANIFEST_DIR`
/// and `CARGO_TARGET_DIR`.
fn workspace_dirs() -> Vec<PathBuf> {
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
        let plan = plan(Fs::Private, None, "box", b"").unwrap().unwrap();
        assert!(plan.root.is_none() && plan.early.is_empty());
        assert!(plan.fresh.iter().any(|f| f.target.as_c_str() == c"/tmp"));
        if Path::new("/etc/hostname").exists() {
            let hostname = plan
                .files
                .iter()
                .find(|f| f.target.as_bytes().ends_with(b"hostname"))
                .unwrap();
            assert_eq!(hostname.contents, b"box\n");
        }
        assert!(plan.late.len() <= MAX_PASSTHROUGH);
    }

    #[test]
    fn an_overlay_plan_carries_proc_sys_dev_and_the_workspace_into_its_root() {
        let plan = plan(Fs::Overlay, None, "box", b"").unwrap().unwrap();
        assert!(matches!(plan.root, Some(NewRoot::Overlay(_))));
        let early: Vec<&[u8]> = plan.early.iter().map(|c| c.target.as_bytes()).collect();
        assert_eq!(early, [&b"/proc"[..], b"/sys", b"/dev"]);
        let target = workspace_dirs()[0].canonicalize().unwrap();
        assert!(
            plan.late
                .iter()
                .any(|c| target
                    .starts_with(Path::new(std::ffi::OsStr::from_bytes(c.target.as_bytes())))),
            "the target directory {target:?} is not carried: {:?}",
            plan.late
        );
        assert!(plan.early.len() + plan.late.len() <= MAX_CARRIED);
        assert_eq!(
            plan.cwd,
            Some(path_cstring(&std::env::current_dir().unwrap()).unwrap())
        );
    }

    #[test]
    fn a_root_gets_a_minimal_dev_and_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("etc/hosts"), "10.0.0.1 inside").unwrap();
        let root = Root::open(dir.path()).unwrap();
        let lab = b"10.0.0.1\tgateway\n";
        let plan = plan(Fs::Private, Some(&root), "box", lab).unwrap().unwrap();
        assert!(matches!(plan.root, Some(NewRoot::Bind(_))));
        let fresh: Vec<&[u8]> = plan.fresh.iter().map(|f| f.target.as_bytes()).collect();
        assert_eq!(fresh, [&b"/dev"[..], b"/dev/shm", b"/tmp"]);
        assert!(
            plan.late
                .iter()
                .all(|c| c.file && c.target.as_bytes().starts_with(b"/dev/"))
        );
        let hosts = plan
            .files
            .iter()
            .find(|f| f.target.as_c_str() == c"/etc/hosts");
        assert_eq!(
            hosts.unwrap().contents,
            b"10.0.0.1 inside\n10.0.0.1\tgateway\n"
        );
        assert!(plan.cwd.is_none());
        assert!(plan.early.len() + plan.late.len() <= MAX_CARRIED);
    }
}
