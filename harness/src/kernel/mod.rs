//! Kernel access: system calls, netlink families, network namespaces, packet
//! sockets, and the creation of processes (the clone, the child's code before
//! `execve`, the labs' user namespace). Uses `common`.

pub(crate) mod frames;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod nftables;
// Without the `capture` feature, a stand-in that records nothing.
#[cfg_attr(not(feature = "capture"), path = "packet_off.rs")]
pub(crate) mod packet;
pub(crate) mod prexec;
pub(crate) mod rootless;
pub(crate) mod rtnl;
pub(crate) mod seqpacket;
pub(crate) mod spawner;
pub(crate) mod sys;
pub(crate) mod userns;
