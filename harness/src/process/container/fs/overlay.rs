//! The plan of a copy-on-write view of a tree ([`OverlayTree`]): which
//! directories are overlays, and which are rebuilt because they hold
//! mount points (overlayfs refuses a lower layer with locked mounts below
//! it, and every mount a container inherits is locked).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::base::Base;
use super::path_cstring;
use crate::common::error::Result;
use crate::kernel::prexec::{OverlayTree, PrivateFile, Symlink, TreeDir};

/// Where the child mounts its scratch `tmpfs`, as the container sees it:
/// a directory of the old root that the container replaces (with its own
/// `/dev`, or the host's carried in) and that holds no lower layer.
const SCRATCH: &str = "/dev";

/// A copy-on-write view of a tree, planned.
pub(super) struct Overlay {
    /// What the child builds.
    pub(super) tree: OverlayTree,
    /// Each overlay's place (as the container sees it) and upper
    /// directory (in the test process's view).
    layers: Vec<(PathBuf, PathBuf)>,
}

impl Overlay {
    /// Puts a file of the container's own at `target` (as the container
    /// sees it) in the upper directory of the overlay that holds it,
    /// before that overlay is mounted: a regular file of the view, owned
    /// by the container's root (writable even where the host's is not,
    /// and replaceable by a rename). `false` when no overlay holds it (it
    /// lies in a directory rebuilt around mount points).
    pub(super) fn write_in_upper(&mut self, target: &Path, contents: &[u8]) -> Result<bool> {
        let layer = self
            .layers
            .iter()
            .filter(|(place, _)| target.starts_with(place))
            .max_by_key(|(place, _)| place.as_os_str().len());
        let Some((place, upper)) = layer else {
            return Ok(false);
        };
        let file = upper.join(target.strip_prefix(place).unwrap_or(target));
        let parent = file.parent().unwrap_or(upper);
        let mkdirs = if parent == upper {
            Vec::new()
        } else {
            super::between(upper, parent)?
        };
        self.tree.upper_files.push(PrivateFile {
            target: path_cstring(&file)?,
            contents: contents.to_vec(),
            staging: None,
            mkdirs,
        });
        Ok(true)
    }
}

/// The plan of an overlay of `base`, with `excluded` (paths as the
/// container sees them, which it gets from elsewhere: `/proc`, fresh
/// mounts, the workspace) left empty.
pub(super) fn plan(base: &Base, excluded: &[PathBuf]) -> Result<Overlay> {
    let scratch = base.outside(Path::new(SCRATCH));
    let root = TreeDir {
        path: path_cstring(&scratch.join("root"))?,
        mode: 0o755,
        owner: (0, 0),
    };
    let mut planner = Planner {
        base,
        excluded,
        mounts: mount_points(base),
        root: scratch.join("root"),
        scratch_dir: scratch.clone(),
        layers: Vec::new(),
        tree: OverlayTree {
            scratch: path_cstring(&scratch)?,
            root: root.path.clone(),
            scratch_dirs: vec![root],
            root_overlay: None,
            dirs: Vec::new(),
            overlays: Vec::new(),
            links: Vec::new(),
            files: Vec::new(),
            upper_files: Vec::new(),
        },
    };
    planner.visit(Path::new("/"))?;
    Ok(Overlay {
        tree: planner.tree,
        layers: planner.layers,
    })
}

struct Planner<'a> {
    base: &'a Base,
    excluded: &'a [PathBuf],
    /// Every mount point in `base`, as the container sees it.
    mounts: Vec<PathBuf>,
    /// The new root's mount point, in the test process's view.
    root: PathBuf,
    /// The scratch `tmpfs`'s mount point, in the test process's view.
    scratch_dir: PathBuf,
    /// Each overlay so far: its place and its upper directory.
    layers: Vec<(PathBuf, PathBuf)>,
    tree: OverlayTree,
}

impl Planner<'_> {
    /// Plans `path` (a directory, as the container sees it) and what lies
    /// below it.
    fn visit(&mut self, path: &Path) -> Result<()> {
        let outside = self.base.outside(path);
        let in_tree = self.in_tree(path);
        let is_root = path == Path::new("/");
        if !is_root && self.excluded.iter().any(|e| e == path) {
            self.tree.dirs.push(tree_dir(in_tree, &outside)?);
            return Ok(());
        }
        let holds_mounts = self.mounts.iter().any(|m| m != path && m.starts_with(path));
        // An empty directory needs no overlay: the tree's own is the same,
        // as private, for less.
        let empty = || std::fs::read_dir(&outside).is_ok_and(|mut e| e.next().is_none());
        if !holds_mounts && !is_root && empty() {
            self.tree.dirs.push(tree_dir(in_tree, &outside)?);
            return Ok(());
        }
        if !holds_mounts {
            let data = self.layer(path, &outside)?;
            if is_root {
                self.tree.root_overlay = Some(data);
            } else {
                self.tree.dirs.push(tree_dir(in_tree.clone(), &outside)?);
                self.tree.overlays.push((path_cstring(&in_tree)?, data));
            }
            return Ok(());
        }
        // The root's own tmpfs takes the mode and owner of the directory
        // it stands for like any other.
        self.tree.dirs.push(tree_dir(in_tree, &outside)?);
        // A directory that cannot be read stays empty.
        let Ok(entries) = std::fs::read_dir(&outside) else {
            return Ok(());
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let child = path.join(entry.file_name());
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                self.visit(&child)?;
            } else if kind.is_symlink() {
                let Ok(to) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                self.tree.links.push(Symlink {
                    to: path_cstring(&to)?,
                    path: path_cstring(&self.in_tree(&child))?,
                });
            } else {
                self.tree.files.push((
                    path_cstring(&entry.path())?,
                    path_cstring(&self.in_tree(&child))?,
                ));
            }
        }
        Ok(())
    }

    /// Where `path` (as the container sees it) is in the tree being
    /// built.
    fn in_tree(&self, path: &Path) -> PathBuf {
        match path.strip_prefix("/") {
            Ok(relative) if !relative.as_os_str().is_empty() => self.root.join(relative),
            _ => self.root.clone(),
        }
    }

    /// The mount data of a new overlay at `place` (as the container sees
    /// it) of `lower`, whose upper directory takes `lower`'s mode and
    /// owner.
    fn layer(&mut self, place: &Path, lower: &Path) -> Result<CString> {
        let n = self.layers.len();
        let upper = self.scratch_dir.join(format!("u{n}"));
        let work = self.scratch_dir.join(format!("w{n}"));
        self.layers.push((place.to_owned(), upper.clone()));
        self.tree.scratch_dirs.push(tree_dir(upper.clone(), lower)?);
        self.tree.scratch_dirs.push(TreeDir {
            path: path_cstring(&work)?,
            mode: 0o700,
            owner: (0, 0),
        });
        let mut data = b"lowerdir=".to_vec();
        escape(lower.as_os_str().as_bytes(), &mut data);
        data.extend_from_slice(b",upperdir=");
        escape(upper.as_os_str().as_bytes(), &mut data);
        data.extend_from_slice(b",workdir=");
        escape(work.as_os_str().as_bytes(), &mut data);
        // Extended attributes in the `user.` namespace: the only ones a
        // user namespace may write.
        data.extend_from_slice(b",userxattr");
        super::cstring(data, "overlay mount data")
    }
}

/// A directory standing for `like` (in the test process's view), with its
/// mode and owner.
fn tree_dir(path: PathBuf, like: &Path) -> Result<TreeDir> {
    let (mode, owner) = std::fs::metadata(like)
        .map_or((0o755, (0, 0)), |m| (m.mode() & 0o7777, (m.uid(), m.gid())));
    Ok(TreeDir {
        path: path_cstring(&path)?,
        mode,
        owner,
    })
}

/// Appends `path` to overlay mount data, with the characters that
/// separate options and layers escaped.
fn escape(path: &[u8], out: &mut Vec<u8>) {
    for &b in path {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The mount points of `base`, as the container sees them, from
/// `/proc/self/mountinfo` (an unreadable table gives none, and the tree
/// is one overlay).
fn mount_points(base: &Base) -> Vec<PathBuf> {
    let table = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(field))))
        .filter_map(|point| {
            let inside = point.strip_prefix(base.dir()).ok()?;
            Some(Path::new("/").join(inside))
        })
        .collect()
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut rest = field;
    while let Some((&b, tail)) = rest.split_first() {
        let octal = tail
            .get(..3)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                rest = &tail[3..];
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(br"/mnt/a\040b\134c"), b"/mnt/a b\\c");
        assert_eq!(unescape(br"/plain\0"), b"/plain\\0");
    }

    #[test]
    fn separators_in_layer_paths_are_escaped() {
        let mut out = Vec::new();
        escape(br"/a,b:c\d", &mut out);
        assert_eq!(out, br"/a\,b\:c\\d");
    }

    #[test]
    fn the_hosts_root_is_rebuilt_around_its_mount_points() {
        let base = Base::host().unwrap();
        let excluded = [PathBuf::from("/proc"), PathBuf::from("/tmp")];
        let tree = plan(&base, &excluded).unwrap().tree;
        // /proc is a mount point: the root is a tmpfs, not one overlay.
        assert!(tree.root_overlay.is_none());
        let dirs: Vec<&[u8]> = tree.dirs.iter().map(|d| d.path.as_bytes()).collect();
        assert!(dirs.contains(&&b"/dev/root/proc"[..]), "{dirs:?}");
        // /etc, with no mount point below it on a plain host, is one
        // overlay of the host's.
        if !mount_points(&base).iter().any(|m| m.starts_with("/etc")) {
            assert!(
                tree.overlays
                    .iter()
                    .any(|(target, data)| target.as_bytes() == b"/dev/root/etc"
                        && data
                            .as_bytes()
                            .starts_with(b"lowerdir=/etc,upperdir=/dev/u")),
                "{:?}",
                tree.overlays
            );
        }
        // Nothing excluded is an overlay.
        assert!(
            !tree
                .overlays
                .iter()
                .any(|(t, _)| t.as_bytes() == b"/dev/root/tmp")
        );
    }
}
