//! The child's filesystem, made in its own mount namespace from paths and
//! contents the parent prepared ([`FsPlan`]): optionally a new root to
//! pivot into ([`NewRoot`]: a root directory, or an overlay of the host's
//! filesystem or of that directory), with trees of the old one carried
//! into it (`/proc`, `/sys`, `/dev` or some of its nodes, the workspace);
//! fresh `tmpfs` mounts where tests write (`/tmp`, `/run`, `/var/tmp`);
//! and private copies of small `/etc` files.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::common::protocol::Stage;

use super::{At, Failure};

mod tree;
pub(crate) use tree::{NewRoot, OverlayTree, TreeDir};

/// At most this many directories of the workspace are carried into a
/// container's filesystem (the test binary's target directory, the
/// manifest directory and `CARGO_TARGET_DIR`; nested ones count once).
pub(crate) const MAX_PASSTHROUGH: usize = 4;

/// At most this many trees are carried: `/proc`, `/sys`, `/dev`, six
/// device nodes and the workspace.
pub(crate) const MAX_CARRIED: usize = 16;

/// A fresh `tmpfs` to mount.
#[derive(Debug)]
pub(crate) struct Fresh {
    /// Where.
    pub target: CString,
    /// Its mount data (`mode=…`).
    pub data: CString,
    /// The directories to create first, outermost first (`/dev/shm` in a
    /// fresh `/dev`).
    pub mkdirs: Vec<CString>,
}

/// A tree of the filesystem as it was before the child changed anything
/// (a directory with the mounts below it, or a file), mounted again
/// elsewhere once the new filesystem is made: below a fresh mount, or in
/// a new root.
#[derive(Debug)]
pub(crate) struct Carried {
    /// Where it is taken from (a path of the filesystem at the clone).
    pub source: CString,
    /// Where it is put (a path of the new filesystem).
    pub target: CString,
    /// The directories to create first, outermost first, the last being
    /// `target` itself when it is a directory below a fresh mount.
    pub mkdirs: Vec<CString>,
    /// Whether `target` is a file to create (a device node's place).
    pub file: bool,
}

/// A symbolic link to create.
#[derive(Debug)]
pub(crate) struct Symlink {
    /// What it points to.
    pub to: CString,
    /// Where it is.
    pub path: CString,
}

/// A file of the container's own.
#[derive(Debug)]
pub(crate) struct PrivateFile {
    /// The path it takes the place of (canonical: a symbolic link such as
    /// `/etc/resolv.conf` is followed).
    pub target: CString,
    /// Its contents.
    pub contents: Vec<u8>,
    /// Where it is written before it is bind-mounted over `target`, in the
    /// plan's staging `tmpfs`; `None` when `target` itself lies in a fresh
    /// mount, where it is written in place after creating `mkdirs`.
    pub staging: Option<CString>,
    /// The directories to create before writing it in place.
    pub mkdirs: Vec<CString>,
}

/// What the child mounts and writes for its filesystem, in this order.
#[derive(Debug, Default)]
pub(crate) struct FsPlan {
    /// Trees taken first and put back after the new root (`/proc`, `/sys`,
    /// `/dev`), before the fresh mounts.
    pub early: Vec<Carried>,
    /// Trees taken first and put back after the fresh mounts (device
    /// nodes, the workspace). `early` and `late` hold at most
    /// [`MAX_CARRIED`] together.
    pub late: Vec<Carried>,
    /// The root to pivot into; `None` keeps the current one.
    pub root: Option<NewRoot>,
    /// Where a `tmpfs` is mounted for the files to bind-mount, and
    /// detached once they are (they stay reachable through their mounts
    /// only; the fresh mounts then cover the place). Not an unlinked file:
    /// the kernel refuses to mount over one, and a container's own
    /// containers mount their copies over these.
    pub staging: Option<CString>,
    /// Fresh `tmpfs` mounts, in order.
    pub fresh: Vec<Fresh>,
    /// Symbolic links made after the fresh mounts (`/dev/fd`, …).
    pub symlinks: Vec<Symlink>,
    /// Files of its own.
    pub files: Vec<PrivateFile>,
    /// The working directory to take at the end, if it exists there.
    pub cwd: Option<CString>,
}

/// Makes the plan's filesystem: clones of the trees to carry (while they
/// are still visible), the new root, the early trees, the files
/// bind-mounted over their targets, the fresh mounts, the late trees, the
/// links, then the files written in place.
pub(super) fn make(plan: &FsPlan) -> Result<(), Failure> {
    let mut trees: [Option<OwnedFd>; MAX_CARRIED] = [const { None }; MAX_CARRIED];
    let carried = plan.early.iter().chain(&plan.late);
    for (tree, carried) in trees.iter_mut().zip(carried) {
        *tree = Some(clone_tree(&carried.source)?);
    }
    if let Some(root) = &plan.root {
        tree::enter(root)?;
    }
    let (early, late) = trees.split_at(plan.early.len().min(MAX_CARRIED));
    put_back(early, &plan.early)?;
    if let Some(staging) = &plan.staging {
        bind_files(staging, &plan.files)?;
    }
    for fresh in &plan.fresh {
        mkdirs(&fresh.mkdirs, Stage::MountTmpfs)?;
        mount_fresh(fresh)?;
    }
    put_back(late, &plan.late)?;
    for link in &plan.symlinks {
        rustix::fs::symlink(link.to.as_c_str(), link.path.as_c_str()).at(Stage::Dev)?;
    }
    for file in plan.files.iter().filter(|f| f.staging.is_none()) {
        mkdirs(&file.mkdirs, Stage::PrivateFiles)?;
        write(&file.target, &file.contents)?;
    }
    if let Some(cwd) = &plan.cwd {
        // Best effort: a directory that is not in the new filesystem
        // leaves the container at its root.
        let _ = rustix::process::chdir(cwd.as_c_str());
    }
    Ok(())
}

/// Writes the files to bind-mount in a `tmpfs` on `staging`, mounts each
/// over its target, and detaches the `tmpfs`.
fn bind_files(staging: &CString, files: &[PrivateFile]) -> Result<(), Failure> {
    rustix::mount::mount(
        c"tmpfs",
        staging.as_c_str(),
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some(c"mode=755"),
    )
    .at(Stage::PrivateFiles)?;
    for file in files {
        if let Some(path) = &file.staging {
            write(path, &file.contents)?;
            rustix::mount::mount_bind(path.as_c_str(), file.target.as_c_str())
                .at(Stage::PrivateFiles)?;
        }
    }
    rustix::mount::unmount(staging.as_c_str(), UnmountFlags::DETACH).at(Stage::PrivateFiles)
}

/// A detached copy of the mounts at and below `path`.
fn clone_tree(path: &CString) -> Result<OwnedFd, Failure> {
    rustix::mount::open_tree(
        CWD,
        path.as_c_str(),
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .at(Stage::Carry)
}

fn mount_fresh(fresh: &Fresh) -> Result<(), Failure> {
    rustix::mount::mount(
        c"tmpfs",
        fresh.target.as_c_str(),
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(fresh.data.as_c_str()),
    )
    .at(Stage::MountTmpfs)
}

/// Puts cloned trees back at their targets.
fn put_back(trees: &[Option<OwnedFd>], carried: &[Carried]) -> Result<(), Failure> {
    for (tree, carried) in trees.iter().zip(carried) {
        let Some(tree) = tree else {
            continue;
        };
        mkdirs(&carried.mkdirs, Stage::Carry)?;
        if carried.file {
            create(&carried.target, Stage::Carry)?;
        }
        rustix::mount::move_mount(
            tree,
            c"",
            CWD,
            carried.target.as_c_str(),
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .at(Stage::Carry)?;
    }
    Ok(())
}

fn mkdirs(dirs: &[CString], stage: Stage) -> Result<(), Failure> {
    for dir in dirs {
        match rustix::fs::mkdir(dir.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Failure(stage, e)),
        }
    }
    Ok(())
}

/// Creates an empty file at `path` (a place to mount a file on), unless
/// there is one.
fn create(path: &CString, stage: Stage) -> Result<(), Failure> {
    rustix::fs::open(
        path.as_c_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map(drop)
    .at(stage)
}

fn write(path: &CString, contents: &[u8]) -> Result<(), Failure> {
    let file = rustix::fs::open(
        path.as_c_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .at(Stage::PrivateFiles)?;
    let mut rest = contents;
    while !rest.is_empty() {
        match rustix::io::write(&file, rest) {
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(Errno::INTR) => {}
            Err(e) => return Err(Failure(Stage::PrivateFiles, e)),
        }
    }
    Ok(())
}
