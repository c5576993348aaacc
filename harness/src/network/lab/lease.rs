//! A container address taken from a lab's pool.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{LabInner, lock};

/// A container address taken from a lab's pool, returned when dropped.
pub(crate) struct Lease {
    pub(super) lab: Arc<LabInner>,
    pub(super) addr: Ipv4Addr,
}

impl Lease {
    pub(crate) fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.lab.pool).release(self.addr);
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.addr)
    }
}
