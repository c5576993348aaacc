//! The filesystem a container's is made from: the test process's own, or a
//! root directory ([`Spec::root`](crate::Spec::root)), and paths resolved
//! in it as the container will resolve them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};

/// The tree a container's filesystem is made from, and the directory it
/// is in the test process's view.
#[derive(Debug)]
pub(crate) struct Base {
    /// Its canonical path (`/` for the test process's own).
    dir: PathBuf,
    /// The directory, opened for path resolution.
    fd: OwnedFd,
}

impl Base {
    /// The directory `dir` (canonical) as a container's root.
    pub(super) fn open(dir: PathBuf) -> std::io::Result<Base> {
        let fd = rustix::fs::open(
            &dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Base { dir, fd })
    }

    /// The test process's own filesystem.
    pub(super) fn host() -> std::io::Result<Base> {
        Self::open(PathBuf::from("/"))
    }

    /// Whether this is the test process's own filesystem.
    pub(super) fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// The directory, in the test process's view.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path` (absolute, as the container sees it) with every symbolic
    /// link followed as the container would follow it (an absolute link
    /// or `..` never leaves the tree): its canonical path as the container
    /// sees it; `None` when it does not exist.
    pub(super) fn resolve(&self, path: &Path) -> Option<PathBuf> {
        if self.is_host() {
            // The same, without needing /proc.
            return path.canonicalize().ok();
        }
        let relative = path.strip_prefix("/").unwrap_or(path);
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let fd = rustix::fs::openat2(
            &self.fd,
            relative,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        let found = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let inside = found.strip_prefix(&self.dir).ok()?;
        Some(Path::new("/").join(inside))
    }

    /// Where `path` (absolute, as the container sees it, resolved) is in
    /// the test process's view.
    pub(super) fn outside(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        self.dir.join(relative)
    }

    /// Whether `path` (as the container sees it) resolves to a directory.
    pub(super) fn is_dir(&self, path: &Path) -> bool {
        self.resolve(path)
            .is_some_and(|p| self.outside(&p).is_dir())
    }

    /// Whether `path` (as the container sees it) resolves to an
    /// executable file; its resolved path if so.
    pub(super) fn executable(&self, path: &Path) -> Option<PathBuf> {
        let found = self.resolve(path)?;
        let meta = std::fs::metadata(self.outside(&found)).ok()?;
        (meta.is_file() && meta.mode() & 0o111 != 0).then_some(found)
    }
}

/// Opens `path` of the test process's view for execution through its
/// descriptor (`execveat(2)`).
pub(crate) fn open_program(path: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), "").unwrap();
        std::os::unix::fs::symlink("/usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root.join("up")).unwrap();
        let base = Base::open(root.clone()).unwrap();
        assert_eq!(
            base.resolve(Path::new("/bin/tool")),
            Some(PathBuf::from("/usr/bin/tool"))
        );
        assert_eq!(base.resolve(Path::new("/")), Some(PathBuf::from("/")));
        // `..` stops at the tree's root: the link leads to the tree's /etc,
        // never the host's.
        assert_eq!(base.resolve(Path::new("/up")), None);
        assert_eq!(base.resolve(Path::new("/etc/hostname")), None);
        std::fs::create_dir(root.join("etc")).unwrap();
        assert_eq!(base.resolve(Path::new("/up")), Some(PathBuf::from("/etc")));
        assert_eq!(
            base.outside(Path::new("/usr/bin/tool")),
            root.join("usr/bin/tool")
        );
        assert!(base.is_dir(Path::new("/bin")));
        assert!(base.executable(Path::new("/bin/tool")).is_none());
    }

    #[test]
    fn the_hosts_tree_is_the_test_processs_view() {
        let base = Base::host().unwrap();
        assert!(base.is_host());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(base.executable(&exe), Some(exe.canonicalize().unwrap()));
    }
}
