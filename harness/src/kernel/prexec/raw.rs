//! System calls rustix does not offer publicly, issued without touching
//! `errno` (inline assembly for x86_64 and aarch64).

use rustix::io::Errno;

/// Issues system call `nr` with up to four arguments; returns the
/// kernel's result (a negated errno on failure).
///
/// # Safety
/// The call and its arguments must be valid.
pub(super) unsafe fn syscall4(nr: libc::c_long, [a, b, c, d]: [usize; 4]) -> isize {
    // SAFETY: the caller vouches for the call; the fifth argument is
    // unused.
    unsafe { syscall5(nr, [a, b, c, d, 0]) }
}

/// Issues system call `nr` with up to five arguments; returns the
/// kernel's result (a negated errno on failure).
///
/// # Safety
/// The call and its arguments must be valid.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn syscall5(nr: libc::c_long, args: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 system call convention (the fourth argument in
    // r10, the fifth in r8; rcx and r11 clobbered). The caller vouches
    // for the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Issues system call `nr` with up to five arguments; returns the
/// kernel's result (a negated errno on failure).
///
/// # Safety
/// The call and its arguments must be valid.
#[cfg(target_arch = "aarch64")]
pub(super) unsafe fn syscall5(nr: libc::c_long, args: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the aarch64 system call convention. The caller vouches
    // for the call.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            options(nostack),
        );
    }
    ret
}

/// The error of a system call's result, if it failed.
pub(super) fn check(ret: isize) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::from_raw_os_error(
            i32::try_from(-ret).unwrap_or(libc::EINVAL),
        ))
    } else {
        Ok(())
    }
}

/// Ends the child with `code` (`exit_group(2)`).
pub(super) fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes no pointer and does not return.
        unsafe { syscall4(libc::SYS_exit_group, [code as usize, 0, 0, 0]) };
    }
}
