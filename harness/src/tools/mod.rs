//! Tools on top of labs and containers: probing, capture, conntrack, the
//! reachability matrix, the doctor, and what a failed test leaves. Uses the
//! layers below.

pub mod capture;
pub mod conntrack;
pub mod doctor;
pub(crate) mod failure;
pub mod matrix;
pub mod probe;
pub(crate) mod snapshot;
