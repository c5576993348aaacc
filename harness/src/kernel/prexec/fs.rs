//! The child's private filesystem: fresh `tmpfs` mounts where tests write
//! (`/tmp`, `/run`, `/var/tmp`), the workspace passed back through them
//! where it lies below one, and private copies of small `/etc` files, all
//! made in the child's own mount namespace from paths and contents the
//! parent prepared ([`FsPlan`]).

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

use crate::common::protocol::Stage;

use super::{At, Failure};

/// At most this many directories are passed through the fresh mounts (the
/// test binary's target directory, the manifest directory and
/// `CARGO_TARGET_DIR`; nested ones count once).
pub(crate) const MAX_PASSTHROUGH: usize = 4;

/// A fresh `tmpfs` to mount.
#[derive(Debug)]
pub(crate) struct Fresh {
    /// Where.
    pub target: CString,
    /// Its mount data (`mode=…`).
    pub data: CString,
}

/// A host directory below a fresh mount that stays the host's.
#[derive(Debug)]
pub(crate) struct Passthrough {
    /// The directory (its canonical path).
    pub path: CString,
    /// The directories to create in the fresh mount, outermost first, the
    /// last being `path` itself.
    pub mkdirs: Vec<CString>,
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

/// What the child mounts and writes for its private filesystem.
#[derive(Debug, Default)]
pub(crate) struct FsPlan {
    /// Fresh `tmpfs` mounts, in order.
    pub fresh: Vec<Fresh>,
    /// Host directories kept visible below them (at most
    /// [`MAX_PASSTHROUGH`]).
    pub passthrough: Vec<Passthrough>,
    /// Files of its own.
    pub files: Vec<PrivateFile>,
    /// Where a `tmpfs` is mounted for the files to bind-mount, and
    /// detached once they are (they stay reachable through their mounts
    /// only; the fresh mounts then cover the place). Not an unlinked file:
    /// the kernel refuses to mount over one, and a container's own
    /// containers mount their copies over these.
    pub staging: Option<CString>,
}

/// Makes the plan's private filesystem: clones of the directories to pass
/// through (while they are still visible), the files bind-mounted over
/// their targets, the fresh mounts, the clones moved back into place, then
/// the files written in place.
pub(super) fn make_private(plan: &FsPlan) -> Result<(), Failure> {
    let mut trees: [Option<OwnedFd>; MAX_PASSTHROUGH] = [const { None }; MAX_PASSTHROUGH];
    for (tree, dir) in trees.iter_mut().zip(&plan.passthrough) {
        *tree = Some(clone_tree(dir)?);
    }
    if let Some(staging) = &plan.staging {
        bind_files(staging, &plan.files)?;
    }
    for fresh in &plan.fresh {
        mount_fresh(fresh)?;
    }
    for (tree, dir) in trees.iter().zip(&plan.passthrough) {
        if let Some(tree) = tree {
            reattach(tree, dir)?;
        }
    }
    for file in plan.files.iter().filter(|f| f.staging.is_none()) {
        mkdirs(&file.mkdirs, Stage::PrivateFiles)?;
        write(&file.target, &file.contents)?;
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

/// A detached copy of the mounts at and below `dir`.
fn clone_tree(dir: &Passthrough) -> Result<OwnedFd, Failure> {
    rustix::mount::open_tree(
        CWD,
        dir.path.as_c_str(),
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .at(Stage::Passthrough)
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

/// Puts a cloned tree back at its path, below a fresh mount.
fn reattach(tree: &OwnedFd, dir: &Passthrough) -> Result<(), Failure> {
    mkdirs(&dir.mkdirs, Stage::Passthrough)?;
    rustix::mount::move_mount(
        tree,
        c"",
        CWD,
        dir.path.as_c_str(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .at(Stage::Passthrough)
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
