//! What ties a network of a topology to the networks upstream of it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{LabInner, Lease};
use crate::common::subnet::Ipv4Subnet;

/// What ties a network of a topology to the rest of it, let go in this
/// order when the network goes.
#[derive(Default)]
pub(crate) struct Upstream {
    /// A routed network: the upstream's route to it (gone before the
    /// router's address goes back).
    pub _route: Option<UpstreamRoute>,
    /// Its router's address on the upstream network's bridge (which holds
    /// the upstream network while this one lives), and the name of its
    /// port there.
    pub lease: Option<(Lease, String)>,
    /// The topology's public hosts, alive while a network of it is.
    pub _keep: Option<Arc<dyn std::any::Any + Send + Sync + std::panic::RefUnwindSafe>>,
    /// Held until everything above is let go: while a [`Weak`](std::sync::Weak) of it
    /// lives, the network's subnet is not free for another.
    pub claim: Option<Arc<()>>,
}

/// A route on an upstream network to a routed network's subnet through
/// its router, deleted when dropped.
pub(crate) struct UpstreamRoute {
    pub upstream: Arc<LabInner>,
    pub subnet: Ipv4Subnet,
    pub via: Ipv4Addr,
}

impl Drop for UpstreamRoute {
    fn drop(&mut self) {
        let (network, prefix) = (self.subnet.network(), self.subnet.prefix());
        if let Err(e) = self.upstream.rtnl().delete_route(network, prefix, self.via) {
            tracing::warn!(%e, "a routed network's route stayed upstream");
        }
    }
}
