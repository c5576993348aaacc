//! A container's new root: a root directory bound onto itself, or a tree
//! of overlays built in a scratch `tmpfs`; then `pivot_root` into it and
//! the old root detached.

use std::ffi::CString;

use rustix::fs::{Gid, Mode, Uid};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::common::protocol::Stage;

use super::super::{At, Failure, raw};
use super::{PrivateFile, Symlink, create, write};

/// The root a container pivots into.
#[derive(Debug)]
pub(crate) enum NewRoot {
    /// A directory, bound (with the mounts below it) onto itself.
    Bind(CString),
    /// A tree of overlays.
    Overlay(OverlayTree),
}

/// A directory to create, with the mode and owner of the one it stands
/// for.
#[derive(Debug)]
pub(crate) struct TreeDir {
    /// Where.
    pub path: CString,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner and group, as the container's user namespace maps them
    /// (best effort: ids outside it leave the container's root, `(0, 0)`,
    /// the owner).
    pub owner: (u32, u32),
}

/// A copy-on-write view of a directory tree: overlays whose upper and work
/// directories lie in a scratch `tmpfs`. Overlayfs refuses a lower layer
/// with locked mounts below it (every mount a container inherits is
/// locked), so a directory with mounts below is not one overlay but a
/// directory of the tree's own `tmpfs`, holding an overlay of each of its
/// subdirectories, its symbolic links and, bound read-only, its other
/// files.
#[derive(Debug)]
pub(crate) struct OverlayTree {
    /// Where the scratch `tmpfs` is mounted (a directory the container
    /// does not keep).
    pub scratch: CString,
    /// The directories to create in it: each overlay's upper and work
    /// directories, and the root's mount point.
    pub scratch_dirs: Vec<TreeDir>,
    /// The new root's mount point, in the scratch `tmpfs`.
    pub root: CString,
    /// `Some(data)`: the root is an overlay with this mount data; `None`:
    /// the root is a `tmpfs` holding the tree.
    pub root_overlay: Option<CString>,
    /// The tree's directories, parents first.
    pub dirs: Vec<TreeDir>,
    /// The overlays below the root: where, and their mount data.
    pub overlays: Vec<(CString, CString)>,
    /// The tree's symbolic links.
    pub links: Vec<Symlink>,
    /// The tree's other files, bound read-only: from where, to where.
    pub files: Vec<(CString, CString)>,
    /// Files of the container's own, written in upper directories before
    /// their overlays are mounted.
    pub upper_files: Vec<PrivateFile>,
}

/// Makes `root` and pivots into it.
pub(super) fn enter(root: &NewRoot) -> Result<(), Failure> {
    let new_root = match root {
        NewRoot::Bind(dir) => {
            rustix::mount::mount_bind_recursive(dir.as_c_str(), dir.as_c_str())
                .at(Stage::NewRoot)?;
            dir
        }
        NewRoot::Overlay(tree) => {
            build(tree)?;
            &tree.root
        }
    };
    rustix::process::chdir(new_root.as_c_str()).at(Stage::PivotRoot)?;
    // The old root ends up on top of the new one, and is detached.
    rustix::process::pivot_root(c".", c".").at(Stage::PivotRoot)?;
    rustix::mount::unmount(c".", UnmountFlags::DETACH).at(Stage::PivotRoot)?;
    rustix::process::chdir(c"/").at(Stage::PivotRoot)
}

fn build(tree: &OverlayTree) -> Result<(), Failure> {
    rustix::mount::mount(
        c"tmpfs",
        tree.scratch.as_c_str(),
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(c"mode=700"),
    )
    .at(Stage::NewRoot)?;
    mkdirs(&tree.scratch_dirs)?;
    for file in &tree.upper_files {
        super::mkdirs(&file.mkdirs, Stage::PrivateFiles)?;
        write(&file.target, &file.contents)?;
    }
    match &tree.root_overlay {
        Some(data) => overlay(&tree.root, data)?,
        None => rustix::mount::mount(
            c"tmpfs",
            tree.root.as_c_str(),
            c"tmpfs",
            MountFlags::empty(),
            Some(c"mode=755"),
        )
        .at(Stage::NewRoot)?,
    }
    mkdirs(&tree.dirs)?;
    for (target, data) in &tree.overlays {
        overlay(target, data)?;
    }
    for link in &tree.links {
        rustix::fs::symlink(link.to.as_c_str(), link.path.as_c_str()).at(Stage::NewRoot)?;
    }
    for (source, target) in &tree.files {
        create(target, Stage::NewRoot)?;
        rustix::mount::mount_bind(source.as_c_str(), target.as_c_str()).at(Stage::NewRoot)?;
        read_only(target)?;
    }
    Ok(())
}

fn overlay(target: &CString, data: &CString) -> Result<(), Failure> {
    rustix::mount::mount(
        c"overlay",
        target.as_c_str(),
        c"overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .at(Stage::Overlay)
}

/// Creates `dirs` with their modes and owners: under a umask of 0 (the
/// program's is restored afterwards), `mkdir` gives the mode but for the
/// set-user-ID and set-group-ID bits, and the container's root owns what
/// it makes.
fn mkdirs(dirs: &[TreeDir]) -> Result<(), Failure> {
    let umask = rustix::process::umask(Mode::empty());
    let made = dirs.iter().try_for_each(mkdir);
    rustix::process::umask(umask);
    made
}

fn mkdir(dir: &TreeDir) -> Result<(), Failure> {
    const SET_ID: u32 = 0o6000;
    let path = dir.path.as_c_str();
    match rustix::fs::mkdir(path, Mode::from_raw_mode(dir.mode & !SET_ID)) {
        Ok(()) => {}
        // The root's tmpfs, mounted on its mount point: set its mode.
        Err(Errno::EXIST) => {
            rustix::fs::chmod(path, Mode::from_raw_mode(dir.mode)).at(Stage::NewRoot)?;
        }
        Err(e) => return Err(Failure(Stage::NewRoot, e)),
    }
    if dir.owner != (0, 0) {
        // An id outside the container's user namespace (EINVAL) leaves
        // the container's root the owner.
        let _ = rustix::fs::chown(
            path,
            Some(Uid::from_raw_unchecked(dir.owner.0)),
            Some(Gid::from_raw_unchecked(dir.owner.1)),
        );
    }
    if dir.mode & SET_ID != 0 {
        rustix::fs::chmod(path, Mode::from_raw_mode(dir.mode)).at(Stage::NewRoot)?;
    }
    Ok(())
}

/// Makes the mount at `target` read-only, and nothing else about it
/// (`mount_setattr(2)`: a remount would have to repeat every flag the
/// kernel locked on it).
fn read_only(target: &CString) -> Result<(), Failure> {
    /// `MOUNT_ATTR_RDONLY`.
    const MOUNT_ATTR_RDONLY: u64 = 1;
    /// The kernel's `struct mount_attr`: `attr_set`, `attr_clr`,
    /// `propagation`, `userns_fd`.
    const RDONLY: [u64; 4] = [MOUNT_ATTR_RDONLY, 0, 0, 0];
    // SAFETY: mount_setattr reads a NUL-terminated path and a mount_attr
    // of the size given, both alive for the call.
    let ret = unsafe {
        raw::syscall5(
            libc::SYS_mount_setattr,
            [
                libc::AT_FDCWD as usize,
                target.as_ptr() as usize,
                0,
                RDONLY.as_ptr() as usize,
                size_of_val(&RDONLY),
            ],
        )
    };
    raw::check(ret).at(Stage::NewRoot)
}
