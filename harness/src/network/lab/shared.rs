//! The labs a process shares among its tests: made on first use, or the
//! test's own in a test container, or the run's keeper's under nextest.

use std::sync::Mutex;

use super::{Lab, LabInner, lock};
use crate::common::error::Result;
use crate::common::subnet::Stack;
use crate::network::keeper;

/// The process's shared labs.
struct Shared {
    /// In a test container: the test's lab.
    adopted: Option<Lab>,
    /// Made by [`Lab::shared_with`], one per stack.
    made: Vec<Lab>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    adopted: None,
    made: Vec::new(),
});

/// Makes `lab` the process's shared lab: a test container's lab, which
/// its body reaches through [`Lab::shared`] as through its `Net`.
pub(crate) fn share(lab: &Lab) {
    lock(&SHARED).adopted = Some(lab.clone());
}

impl Lab {
    /// The process's shared lab with default settings, created on first use
    /// and kept until the process ends. Every test of a test binary that
    /// calls this shares one bridge, so containers of concurrent tests can
    /// reach each other; use [`Lab::builder`] for a lab of one's own. Under
    /// `cargo nextest run`, the lab of the run's keeper, which every test
    /// process of the run shares (see "nextest" in the crate's
    /// documentation).
    ///
    /// Inside the body of a [`netns_test`](crate::netns_test), this is the
    /// lab of the test's own network ([`Net::lab`](crate::Net::lab)).
    pub fn shared() -> Result<Lab> {
        Lab::shared_with(Stack::default())
    }

    /// The process's shared lab whose network carries `stack`: one per
    /// stack, each made on first use (see [`Lab::shared`]). Inside the
    /// body of a [`netns_test`](crate::netns_test), the test's own lab,
    /// whatever `stack`.
    pub fn shared_with(stack: Stack) -> Result<Lab> {
        let mut shared = lock(&SHARED);
        if let Some(adopted) = &shared.adopted {
            return Ok(adopted.clone());
        }
        if let Some(lab) = shared.made.iter().find(|lab| lab.stack() == stack) {
            return Ok(lab.clone());
        }
        let kept = keeper::client().map(|keeper| {
            let (view, lab_ns, outside_ns) = keeper.lab(stack)?;
            LabInner::adopt(view, lab_ns, outside_ns, Some(keeper)).map(Lab::from_inner)
        });
        let lab = match kept {
            Some(Ok(lab)) => lab,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the keeper of the run's labs failed; this process builds its own");
                Lab::builder().stack(stack).build()?
            }
            None => Lab::builder().stack(stack).build()?,
        };
        shared.made.push(lab.clone());
        Ok(lab)
    }
}
