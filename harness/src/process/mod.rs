//! Processes on a lab: containers. Uses `network`, `kernel` and `common`.

pub(crate) mod container;
