//! A root directory for a container ([`Spec::root`](crate::Spec::root)),
//! checked at spawn before anything is created: it exists, has the
//! directories the container's `/proc`, `/sys` and `/dev` are mounted on,
//! the program (found with the container's `PATH` inside it) and what the
//! kernel needs to execute it (a script's interpreter, a dynamic loader).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::base::Base;
use super::elf::{self, Interpreter};
use crate::common::error::{Error, Result};

/// The mount points a root must have.
const MOUNT_POINTS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// How deep scripts may name interpreters that are scripts (the kernel's
/// own limit is a little deeper).
const MAX_SCRIPT_DEPTH: usize = 4;

/// A checked root directory.
#[derive(Debug)]
pub(crate) struct Root {
    /// As given, for messages.
    given: PathBuf,
    base: Base,
}

impl Root {
    /// Checks that `dir` exists and has the container's mount points.
    pub(crate) fn open(dir: &Path) -> Result<Root> {
        let error = |reason: String, fix: String| Error::InvalidRoot {
            root: dir.to_owned(),
            reason,
            fix,
        };
        let unpack = format!(
            "give the path of a root filesystem, or make one there (unpack a distribution's \
             image into it, run `debootstrap stable {}`, or copy programs and the libraries \
             `ldd` lists for them)",
            dir.display()
        );
        let canonical = dir.canonicalize().map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                "it does not exist".to_owned()
            } else {
                format!("it cannot be opened ({e})")
            };
            error(reason, unpack.clone())
        })?;
        if !canonical.is_dir() {
            return Err(error("it is not a directory".into(), unpack));
        }
        let base = Base::open(canonical)
            .map_err(|e| error(format!("it cannot be opened ({e})"), unpack))?;
        let missing: Vec<&str> = MOUNT_POINTS
            .into_iter()
            .filter(|path| !base.is_dir(Path::new(path)))
            .collect();
        if !missing.is_empty() {
            let dirs: Vec<String> = missing
                .iter()
                .map(|m| base.outside(Path::new(m)).display().to_string())
                .collect();
            return Err(error(
                format!(
                    "it has no directory {} (the container's /proc, /sys and /dev are mounted there)",
                    missing.join(", ")
                ),
                format!("mkdir {}", dirs.join(" ")),
            ));
        }
        Ok(Root {
            given: dir.to_owned(),
            base,
        })
    }

    /// The tree the container's filesystem is made from.
    pub(super) fn base(&self) -> &Base {
        &self.base
    }

    fn error(&self, reason: String, fix: impl Into<String>) -> Error {
        Error::InvalidRoot {
            root: self.given.clone(),
            reason,
            fix: fix.into(),
        }
    }

    /// Finds `program` in the root as `execvp` would there (its path
    /// inside the root, or the container's `PATH` from `env`), and checks
    /// that the root has what the kernel needs to execute it. Returns its
    /// path inside the root.
    pub(crate) fn program(&self, program: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf> {
        let name = Path::new(program);
        let found = if program.as_bytes().contains(&b'/') {
            let absolute = Path::new("/").join(name);
            self.base.executable(&absolute).ok_or_else(|| {
                self.error(
                    format!("it has no executable file {}", absolute.display()),
                    "copy the program there, or give the path of one the root has",
                )
            })?
        } else {
            let path = env.iter().find(|(k, _)| k == "PATH").map_or_else(
                || OsString::from("/usr/local/bin:/usr/bin:/bin"),
                |(_, v)| v.clone(),
            );
            std::env::split_paths(&path)
                .filter(|dir| dir.is_absolute())
                .find_map(|dir| self.base.executable(&dir.join(name)))
                .ok_or_else(|| {
                    self.error(
                        format!(
                            "it has no program {:?} in the container's PATH ({})",
                            name,
                            path.to_string_lossy()
                        ),
                        "install the program in the root, give its path inside the root, \
                         or set PATH with Spec::env",
                    )
                })?
        };
        self.check_runs(&self.base.outside(&found), &found.display().to_string())?;
        Ok(found)
    }

    /// Checks that the root has what the kernel needs to execute `file`
    /// (a path of the test process's view), called `what` in messages: the
    /// interpreters of scripts, the dynamic loader of an ELF executable. A
    /// file the test process cannot read is not checked (the kernel may
    /// still execute it).
    pub(crate) fn check_runs(&self, file: &Path, what: &str) -> Result<()> {
        let mut file = file.to_owned();
        let mut what = what.to_owned();
        for _ in 0..MAX_SCRIPT_DEPTH {
            let Ok(Some(needed)) = elf::interpreter(&file) else {
                return Ok(());
            };
            let (Interpreter::Script(path) | Interpreter::Loader(path)) = &needed;
            let Some(found) = self.base.resolve(path) else {
                let (kind, fix) = match needed {
                    Interpreter::Script(_) => (
                        "the interpreter",
                        format!("install {} in the root", path.display()),
                    ),
                    Interpreter::Loader(_) => (
                        "the dynamic loader",
                        format!(
                            "copy it and the libraries {what} needs (`ldd` lists them) into the \
                             root at the same paths, or use a statically linked program"
                        ),
                    ),
                };
                return Err(self.error(
                    format!("it has no {}, {kind} of {what}", path.display()),
                    fix,
                ));
            };
            if matches!(needed, Interpreter::Loader(_)) {
                return Ok(());
            }
            file = self.base.outside(&found);
            what = found.display().to_string();
        }
        Ok(())
    }
}
