//! What every layer speaks: errors, settings, subnets and names, and the
//! messages between the harness's processes. Uses nothing of the other
//! layers.

pub(crate) mod error;
pub(crate) mod names;
pub(crate) mod nat;
pub(crate) mod protocol;
pub(crate) mod settings;
pub(crate) mod subnet;
