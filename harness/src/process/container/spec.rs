//! What a container runs ([`Spec`], [`Stdio`]) and how that becomes a
//! program, arguments, environment and standard streams.

use super::fs::Fs;
use crate::common::error::{Error, Result};
use crate::kernel::sys;
use crate::network::link::Conditions;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What to connect a container's standard input, output or error to.
///
/// Named like [`std::process::Stdio`] because it plays the same part in a
/// [`Spec`] as that does in a [`std::process::Command`]; it is a plain
/// enum (cloneable, comparable) where std's is an opaque handle. Import one
/// of them under another name where both are needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdio {
    /// The test process's own (the default for output and error).
    #[default]
    Inherit,
    /// `/dev/null` (the default for input).
    Null,
    /// A pipe; take the test's end with [`Container::take_stdin`](crate::Container::take_stdin),
    /// [`Container::take_stdout`](crate::Container::take_stdout) or [`Container::take_stderr`](crate::Container::take_stderr).
    Piped,
}

#[derive(Clone, Debug)]
pub(super) enum Program {
    Command(OsString),
    Function(fn()),
}

/// What a container runs, like [`std::process::Command`]: an external
/// program, or a function of the running executable (which is re-executed:
/// nothing of the test process's threads or locks is carried into the
/// container).
///
/// ```
/// use netns_harness::{Spec, Stdio};
/// let ping = Spec::command("ping").args(["-c", "1", "10.200.0.1"]).name("pinger");
/// fn serve() { /* runs in the container */ }
/// let server = Spec::function(serve).name("server").stdout(Stdio::Piped);
/// # let _ = (ping, server);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Spec {
    pub(super) program: Program,
    pub(super) args: Vec<OsString>,
    pub(super) env: Vec<(OsString, Option<OsString>)>,
    pub(super) name: Option<String>,
    pub(super) aliases: Vec<String>,
    pub(super) stdio: [Stdio; 3],
    pub(super) stderr_to_stdout: bool,
    /// The conditions of its link, out and in, set before it starts.
    pub(super) conditions: [Option<Conditions>; 2],
    pub(super) fs: Fs,
    pub(super) root: Option<PathBuf>,
}

impl Spec {
    pub(super) fn new(program: Program) -> Self {
        Self {
            program,
            args: Vec::new(),
            env: Vec::new(),
            name: None,
            aliases: Vec::new(),
            stdio: [Stdio::Null, Stdio::Inherit, Stdio::Inherit],
            stderr_to_stdout: false,
            conditions: [None, None],
            fs: Fs::Private,
            root: None,
        }
    }

    /// Runs `program`, looked up in `PATH` unless it contains a `/`.
    pub fn command(program: impl AsRef<OsStr>) -> Self {
        Self::new(Program::Command(program.as_ref().to_owned()))
    }

    /// Runs `function` in a re-execution of the current executable. The
    /// container exits with 0 when it returns and 101 when it panics. Its
    /// arguments are in [`std::env::args`] after the first.
    pub fn function(function: fn()) -> Self {
        Self::new(Program::Function(function))
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (the container inherits the rest of the
    /// test process's environment).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// The container's name and hostname: 1 to 15 ASCII letters, digits,
    /// `-` or `_`. Defaults to `c<N>`. Containers started after it find
    /// it by this name in their `/etc/hosts`, and
    /// [`Lab::resolve`](crate::Lab::resolve) does while it lives; several
    /// containers may share one (it then names all of them), but not
    /// with a lab host's alias or [`GATEWAY_NAME`](crate::GATEWAY_NAME)
    /// or [`OUTSIDE_NAME`](crate::OUTSIDE_NAME)
    /// ([`Error::DuplicateName`](crate::Error::DuplicateName)).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Gives the container another name, as well as [`Spec::name`]: a
    /// host name (RFC 1123: labels of letters, digits and `-` joined by
    /// `.`, such as `db` or `db.lab.test`) that no other host of the lab
    /// has. It is in the `/etc/hosts` of the containers started after
    /// this one (and of this one) and in [`Lab::resolve`](crate::Lab::resolve)
    /// while the container lives. For a process on the outside host
    /// ([`Lab::spawn_outside`](crate::Lab::spawn_outside)) it names the
    /// outside host's address (`example.com` for a server there).
    ///
    /// Spawning fails, before anything is created, with
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a name that is
    /// not a host name and [`Error::DuplicateName`](crate::Error::DuplicateName)
    /// for one a host of the lab has already.
    ///
    /// ```
    /// use netns_harness::Spec;
    /// let db = Spec::command("sleep").arg("60").name("db").alias("db.lab.test");
    /// # let _ = db;
    /// ```
    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.aliases.push(name.into());
        self
    }

    /// Standard input (default [`Stdio::Null`]).
    pub fn stdin(mut self, stdio: Stdio) -> Self {
        self.stdio[0] = stdio;
        self
    }

    /// Standard output (default [`Stdio::Inherit`]).
    pub fn stdout(mut self, stdio: Stdio) -> Self {
        self.stdio[1] = stdio;
        self
    }

    /// Standard error (default [`Stdio::Inherit`]).
    pub fn stderr(mut self, stdio: Stdio) -> Self {
        self.stdio[2] = stdio;
        self
    }

    /// Sends standard error where standard output goes (`2>&1`), so that
    /// both arrive in one stream, in order.
    pub fn stderr_to_stdout(mut self) -> Self {
        self.stderr_to_stdout = true;
        self
    }

    /// Conditions of what the container sends, in force from its start
    /// (see [`Link::set`](crate::Link::set) and [`Direction::Out`](crate::Direction::Out)): as
    /// `tc qdisc add dev eth0 root netem …` inside it would.
    ///
    /// ```
    /// use netns_harness::Spec;
    /// let slow = Spec::command("true").link("latency=50ms rate=10mbit".parse().unwrap());
    /// # let _ = slow;
    /// ```
    pub fn link(mut self, conditions: Conditions) -> Self {
        self.conditions[0] = Some(conditions);
        self
    }

    /// Conditions of what the container receives, in force from its start
    /// ([`Direction::In`](crate::Direction::In)).
    pub fn link_in(mut self, conditions: Conditions) -> Self {
        self.conditions[1] = Some(conditions);
        self
    }

    /// What the container sees of the filesystem (default
    /// [`Fs::Private`]: its own `/tmp`, `/run`, `/var/tmp` and `/etc`
    /// network files, the workspace shared; [`Fs::Overlay`]: the same over
    /// a copy-on-write view of everything; [`Fs::Host`]: the host's as it
    /// is).
    pub fn fs(mut self, fs: Fs) -> Self {
        self.fs = fs;
        self
    }

    /// Runs the container in the root filesystem `dir` (one the user
    /// prepared: a distribution's image unpacked, a `debootstrap`, or
    /// programs and their libraries copied), as the walkthrough's mini
    /// container does: it `pivot_root`s into `dir` and sees nothing of the
    /// host's files. It gets its own `/proc` and `/sys`, and a `/dev` of
    /// its own (a `tmpfs` with the host's `null`, `zero`, `full`,
    /// `random`, `urandom` and `tty`, the `fd`, `stdin`, `stdout` and
    /// `stderr` links and a fresh `shm`); [`Spec::fs`] applies to `dir`
    /// (see [`Fs`]). A program is looked up inside `dir`, with the
    /// container's `PATH`; a [`Spec::function`] runs the test binary,
    /// which `dir` need not hold (it is executed through a descriptor),
    /// but whose dynamic loader and libraries it must have at the same
    /// paths as the host (so a function there cannot start containers of
    /// its own: the binary is not there to re-execute).
    ///
    /// Spawning fails with [`Error::InvalidRoot`](crate::Error::InvalidRoot),
    /// before anything is created, when `dir` does not exist, lacks a
    /// `proc`, `sys` or `dev` directory, the program, or what the kernel
    /// needs to execute it (a script's interpreter, a dynamic loader;
    /// libraries are not checked: a missing one makes the loader print
    /// its name and the container exit with 127).
    ///
    /// ```no_run
    /// use netns_harness::{Lab, Spec, Stdio};
    /// let lab = Lab::shared()?;
    /// let ls = lab
    ///     .spawn(&Spec::command("ls").arg("/").root("/srv/rootfs").stdout(Stdio::Piped))?
    ///     .output(std::time::Duration::from_secs(10))?;
    /// print!("{}", String::from_utf8_lossy(&ls.stdout));
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    pub(super) fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in &self.env {
            env.retain(|(k, _)| k != key);
            if let Some(value) = value {
                env.push((key.clone(), value.clone()));
            }
        }
        env
    }
}

pub(super) fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::InvalidName {
        name: what.to_owned(),
        reason: "it contains a NUL byte".into(),
    })
}

/// Finds `program` as `execvp` would, with the container's `PATH`.
pub(super) fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> Result<PathBuf> {
    let not_found = |reason: String| Error::CommandNotFound {
        program: program.to_string_lossy().into_owned(),
        reason,
    };
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(not_found("no executable file at that path".into()))
        };
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map_or_else(
        || OsString::from("/usr/local/bin:/usr/bin:/bin"),
        |(_, v)| v.clone(),
    );
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            not_found(format!(
                "no executable of that name in PATH ({}); install it or give its full path",
                path.to_string_lossy()
            ))
        })
}

pub(super) fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|source| Error::CurrentExe {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })
}

/// The descriptors of one standard stream: the child's end and ours.
pub(super) struct StreamEnds {
    pub(super) child: Option<OwnedFd>,
    pub(super) parent: Option<File>,
}

pub(super) fn stream(stdio: Stdio, input: bool) -> io::Result<StreamEnds> {
    Ok(match stdio {
        Stdio::Inherit => StreamEnds {
            child: None,
            parent: None,
        },
        Stdio::Null => StreamEnds {
            child: Some(
                std::fs::OpenOptions::new()
                    .read(input)
                    .write(!input)
                    .open("/dev/null")?
                    .into(),
            ),
            parent: None,
        },
        Stdio::Piped => {
            let (read, write) = sys::pipe()?;
            let (child, parent) = if input { (read, write) } else { (write, read) };
            StreamEnds {
                child: Some(child),
                parent: Some(File::from(parent)),
            }
        }
    })
}
