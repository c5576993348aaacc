//! What runs before `main` in every executable that links the harness: the
//! rootless user namespace, and the entry point of a container that runs a
//! Rust function of the executable.
//!
//! Both must happen while the process still has a single thread, before
//! libtest (or any `main`) starts: a user namespace can only be entered by a
//! single-threaded process, and a re-executed container must run its
//! function instead of the test harness.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::common::protocol::{FUNCTION_VAR, FunctionRef, KEEPER_ROLE_VAR, KeeperRole};
use crate::kernel::sys;
use crate::network::keeper;
use crate::{kernel::rootless, test::runner};

/// The exit code of a container function that panicked, as libtest uses.
const PANIC_EXIT: i32 = 101;

fn before_main() {
    if let Some(role) = std::env::var(KEEPER_ROLE_VAR)
        .ok()
        .and_then(|text| KeeperRole::decode(&text))
    {
        // SAFETY: before main there is one thread, so nothing else reads the
        // environment. The variable is not for the keeper's children.
        unsafe { sys::remove_env(KEEPER_ROLE_VAR) };
        crate::network::lab::keep(role);
    }
    if std::env::var_os(FUNCTION_VAR).is_none() {
        keeper::join();
    }
    rootless::init();
    runner::take_context();
    if let Ok(offset) = std::env::var(FUNCTION_VAR) {
        crate::kernel::userns::mark_contained();
        // SAFETY: before main there is one thread, so nothing else reads the
        // environment. The variable must not reach the function's children.
        unsafe { sys::remove_env(FUNCTION_VAR) };
        run_function(&offset);
    }
}

sys::before_main!(before_main);

/// Runs the function `offset` names and exits with its outcome: 0 when it
/// returns, 101 when it panics (the panic message goes to stderr).
fn run_function(offset: &str) -> ! {
    let Some(FunctionRef(offset)) = FunctionRef::decode(offset) else {
        eprintln!("netns-harness: malformed {FUNCTION_VAR}={offset:?}");
        std::process::exit(PANIC_EXIT);
    };
    // SAFETY: the offset was written by `Spec::function` in a process
    // running this same executable (the container re-executes it).
    let function = unsafe { sys::fn_from_offset(offset) };
    let code = match catch_unwind(AssertUnwindSafe(function)) {
        Ok(()) => 0,
        Err(_) => PANIC_EXIT,
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}
