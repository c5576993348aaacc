//! What the kernel needs besides a program to execute it: the interpreter
//! of a script (`#!`), or the dynamic loader of an ELF executable (its
//! `PT_INTERP` program header).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a program needs the kernel to load first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Interpreter {
    /// The interpreter of a script (`#!/bin/sh`).
    Script(PathBuf),
    /// The dynamic loader of an ELF executable (`/lib64/ld-linux-x86-64.so.2`).
    Loader(PathBuf),
}

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// The loader's path is at most this long (the kernel's limit is a page).
const MAX_INTERP: u64 = 4096;

/// The interpreter `file` needs, if any (a statically linked program or
/// an unknown format needs none the harness can check).
pub(super) fn interpreter(path: &Path) -> io::Result<Option<Interpreter>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 64];
    let len = read_up_to(&mut file, &mut head)?;
    let head = &head[..len];
    if let Some(line) = head.strip_prefix(b"#!") {
        // The first word of the first line (the kernel's rule).
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let interpreter = line
            .split(|b| b.is_ascii_whitespace())
            .find(|word| !word.is_empty());
        return Ok(interpreter
            .map(|word| Interpreter::Script(PathBuf::from(std::ffi::OsStr::from_bytes(word)))));
    }
    let Some(header) = Header::parse(head) else {
        return Ok(None);
    };
    for index in 0..u64::from(header.phnum) {
        let mut ph = [0u8; 56];
        let size = usize::from(header.phentsize).min(ph.len());
        file.seek(SeekFrom::Start(
            header.phoff + index * u64::from(header.phentsize),
        ))?;
        file.read_exact(&mut ph[..size])?;
        if header.u32(&ph, 0) != Some(PT_INTERP) {
            continue;
        }
        let (offset, filesz) = if header.wide {
            (header.u64(&ph, 8), header.u64(&ph, 32))
        } else {
            (
                header.u32(&ph, 4).map(u64::from),
                header.u32(&ph, 16).map(u64::from),
            )
        };
        let (Some(offset), Some(filesz)) = (offset, filesz) else {
            return Ok(None);
        };
        let mut name = Vec::new();
        file.seek(SeekFrom::Start(offset))?;
        (&mut file)
            .take(filesz.min(MAX_INTERP))
            .read_to_end(&mut name)?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(Interpreter::Loader(PathBuf::from(
            std::ffi::OsStr::from_bytes(name),
        ))));
    }
    Ok(None)
}

/// Reads until `buf` is full or the file ends; how much was read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(len)
}

/// What the harness reads of an ELF header.
struct Header {
    /// 64-bit (`ELFCLASS64`).
    wide: bool,
    /// Little-endian (`ELFDATA2LSB`).
    little: bool,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

impl Header {
    fn parse(head: &[u8]) -> Option<Header> {
        if head.get(..4)? != b"\x7fELF" {
            return None;
        }
        let wide = match head.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match head.get(5)? {
            1 => true,
            2 => false,
            _ => return None,
        };
        let mut header = Header {
            wide,
            little,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
        };
        let (phoff, phentsize, phnum) = if wide {
            (header.u64(head, 0x20)?, 0x36, 0x38)
        } else {
            (u64::from(header.u32(head, 0x1c)?), 0x2a, 0x2c)
        };
        header.phoff = phoff;
        header.phentsize = header.u16(head, phentsize)?;
        header.phnum = header.u16(head, phnum)?;
        Some(header)
    }

    fn bytes<const N: usize>(&self, buf: &[u8], at: usize) -> Option<[u8; N]> {
        let bytes: [u8; N] = buf.get(at..at + N)?.try_into().ok()?;
        Some(bytes)
    }

    fn u16(&self, buf: &[u8], at: usize) -> Option<u16> {
        let b = self.bytes(buf, at)?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32(&self, buf: &[u8], at: usize) -> Option<u32> {
        let b = self.bytes(buf, at)?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64(&self, buf: &[u8], at: usize) -> Option<u64> {
        let b = self.bytes(buf, at)?;
        Some(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader the test binary names is the one the kernel mapped for
    /// it, as `/proc/self/maps` shows independently.
    #[test]
    fn the_test_binary_names_the_loader_the_kernel_mapped() {
        let exe = std::env::current_exe().unwrap();
        let Some(Interpreter::Loader(loader)) = interpreter(&exe).unwrap() else {
            panic!("the test binary is dynamically linked");
        };
        let loader = loader.canonicalize().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            maps.lines().any(|l| l.ends_with(loader.to_str().unwrap())),
            "{loader:?} is not mapped:\n{maps}"
        );
    }

    #[test]
    fn scripts_name_their_interpreter_and_other_files_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#!  /bin/sh -e\necho\n").unwrap();
        assert_eq!(
            interpreter(&script).unwrap(),
            Some(Interpreter::Script("/bin/sh".into()))
        );
        let data = dir.path().join("data");
        std::fs::write(&data, "\x7fELF\x02").unwrap();
        assert_eq!(interpreter(&data).unwrap(), None);
        std::fs::write(&data, "").unwrap();
        assert_eq!(interpreter(&data).unwrap(), None);
    }
}
