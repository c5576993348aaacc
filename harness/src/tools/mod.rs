//! Tools on top of labs and containers: probing, capture, conntrack, the
//! reachability matrix, the doctor, and what a failed test leaves. Uses the
//! layers below.

#[cfg(feature = "capture")]
#[cfg_attr(docsrs, doc(cfg(feature = "capture")))]
pub mod capture;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub mod conntrack;
pub mod doctor;
pub(crate) mod failure;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub mod matrix;
#[cfg(feature = "probe")]
#[cfg_attr(docsrs, doc(cfg(feature = "probe")))]
pub mod probe;
pub(crate) mod snapshot;
