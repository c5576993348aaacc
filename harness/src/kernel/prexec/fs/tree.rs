//! A container's new root: a root directory bound onto itself, or a tree
//! of overlays built in a scratch `tmpfs`; then `pivot_root` into it and
//! the old root detached.

use std::ffi::CString;

use rustix::fs::{Gid, Mode, Uid};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};

use crate::common::protocol::Stage;

use super::super::{At, Failure, raw};
use super::{Symlink, create};

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
    /// Its owner and group (best effort: ids outside the container's user
    /// namespace leave its root the owner).
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

fn mkdirs(dirs: &[TreeDir]) -> Result<(), Failure> {
    for dir in dirs {
        match rustix::fs::mkdir(dir.path.as_c_str(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(Failure(Stage::NewRoot, e)),
        }
        let (uid, gid) = dir.owner;
        // An id outside the container's user namespace (EINVAL) leaves
        // the container's root the owner.
        let _ = rustix::fs::chown(
            dir.path.as_c_str(),
            Some(Uid::from_raw_unchecked(uid)),
            Some(Gid::from_raw_unchecked(gid)),
        );
        rustix::fs::chmod(dir.path.as_c_str(), Mode::from_raw_mode(dir.mode)).at(Stage::NewRoot)?;
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
