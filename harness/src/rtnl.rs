//! rtnetlink requests the lab needs, each the equivalent of one `ip` command.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{Error, Result};
use crate::netlink::{
    F_ACK, F_CREATE, F_DUMP, F_EXCL, F_REQUEST, Message, Refusal, Socket, attributes,
};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_BRPORT_STATE: u16 = 1;
const BR_STATE_FORWARDING: u8 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IF_OPER_UP: u8 = 6;
const IFLA_BR_FORWARD_DELAY: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;

const IFF_UP: u32 = libc::IFF_UP as u32;

/// `struct ifinfomsg` for a link `index` (0: by name) with `flags`.
fn ifinfomsg(index: u32, flags: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&flags.to_ne_bytes()); // change mask
    h
}

/// What [`Rtnl::link_state`] finds.
pub(crate) struct LinkState {
    /// Operationally up: the kernel has processed its carrier (and given it
    /// a queue); until then, what it sends is dropped.
    pub up: bool,
    /// A bridge port in the forwarding state.
    pub forwarding: bool,
}

/// The far end of a veth pair: its name, namespace and hardware address.
pub(crate) struct Peer<'a> {
    pub name: &'a str,
    pub netns: BorrowedFd<'a>,
    pub mac: Option<[u8; 6]>,
}

/// An rtnetlink socket in one namespace of the lab.
pub(crate) struct Rtnl {
    socket: Socket,
    namespace: &'static str,
}

impl Rtnl {
    /// Opens a socket in the calling thread's namespace; `namespace` names
    /// it in errors.
    pub(crate) fn open(namespace: &'static str) -> Result<Self> {
        let socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| {
            Error::os(
                format!("open a netlink socket in the {namespace} namespace"),
                e,
            )
        })?;
        Ok(Self { socket, namespace })
    }

    fn request(
        &mut self,
        operation: impl FnOnce() -> String,
        message: Message,
    ) -> Result<Vec<Vec<u8>>> {
        self.socket
            .transact(vec![message])
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: operation(),
                namespace: self.namespace,
                source: error,
                kernel_message: message,
            })
    }

    /// `ip link set dev <index> up`
    pub(crate) fn set_up(&mut self, index: u32) -> Result<()> {
        let msg = Message::new(RTM_NEWLINK, F_REQUEST | F_ACK, &ifinfomsg(index, IFF_UP));
        self.request(|| format!("set link {index} up"), msg)
            .map(drop)
    }

    /// `ip link add <name> address <mac> up type bridge forward_delay 0`.
    /// A bridge without an address of its own takes the lowest of its
    /// ports', so it would change as containers come and go, and every
    /// container's cached gateway address with it.
    pub(crate) fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        let msg = Message::new(
            RTM_NEWLINK,
            F_REQUEST | F_ACK | F_CREATE | F_EXCL,
            &ifinfomsg(0, IFF_UP),
        )
        .attr_str(IFLA_IFNAME, name)
        .attr(IFLA_ADDRESS, &mac)
        .begin(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "bridge")
        .begin(IFLA_INFO_DATA)
        .attr_u32(IFLA_BR_FORWARD_DELAY, 0)
        .end()
        .end();
        self.request(|| format!("add bridge {name}"), msg).map(drop)
    }

    /// `ip link add <name> [master <master>] up type veth peer <peer> netns <fd> [address <mac>]`:
    /// both ends are created where they will live, so nothing is moved
    /// between namespaces afterwards. The peer stays down (the kernel cannot
    /// open it before the pair is complete); whoever owns its namespace
    /// brings it up.
    pub(crate) fn add_veth(
        &mut self,
        name: &str,
        master: Option<u32>,
        peer: &Peer<'_>,
    ) -> Result<()> {
        let mut msg = Message::new(
            RTM_NEWLINK,
            F_REQUEST | F_ACK | F_CREATE | F_EXCL,
            &ifinfomsg(0, IFF_UP),
        )
        .attr_str(IFLA_IFNAME, name);
        if let Some(master) = master {
            msg = msg.attr_u32(IFLA_MASTER, master);
        }
        msg = msg
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .raw(&ifinfomsg(0, 0))
            .attr_str(IFLA_IFNAME, peer.name)
            .attr_u32(IFLA_NET_NS_FD, peer.netns.as_raw_fd() as u32);
        if let Some(mac) = peer.mac {
            msg = msg.attr(IFLA_ADDRESS, &mac);
        }
        let msg = msg.end().end().end();
        self.request(|| format!("add veth {name} with peer {}", peer.name), msg)
            .map(drop)
    }

    /// `ip link set dev <name> down nomaster`: takes a port off its bridge
    /// without unregistering the device, which would wait for an RCU
    /// barrier (tens of milliseconds).
    pub(crate) fn detach(&mut self, name: &str) -> Result<()> {
        let mut header = ifinfomsg(0, 0);
        header[12..16].copy_from_slice(&IFF_UP.to_ne_bytes()); // change: clear IFF_UP
        let msg = Message::new(RTM_NEWLINK, F_REQUEST | F_ACK, &header)
            .attr_str(IFLA_IFNAME, name)
            .attr_u32(IFLA_MASTER, 0);
        self.request(|| format!("detach link {name} from its bridge"), msg)
            .map(drop)
    }

    /// Every link of the namespace, as `RTM_NEWLINK` payloads (`ip link`).
    pub(crate) fn dump_links(&mut self) -> Result<Vec<Vec<u8>>> {
        let namespace = self.namespace;
        self.socket
            .dump(link_dump)
            .map_err(|Refusal { error, message }| Error::Netlink {
                operation: "list links".to_owned(),
                namespace,
                source: error,
                kernel_message: message,
            })
    }

    /// The index of link `name` (`ip link show <name>`).
    pub(crate) fn link_index(&mut self, name: &str) -> Result<u32> {
        let msg = Message::new(RTM_GETLINK, F_REQUEST | F_ACK, &ifinfomsg(0, 0))
            .attr_str(IFLA_IFNAME, name);
        let replies = self.request(|| format!("look up link {name}"), msg)?;
        replies
            .first()
            .and_then(|reply| reply.get(4..8))
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| Error::Netlink {
                operation: format!("look up link {name}"),
                namespace: self.namespace,
                source: std::io::Error::from(std::io::ErrorKind::InvalidData),
                kernel_message: Some("no link message in the reply".into()),
            })
    }

    /// The operational state of link `name`, and its state as a bridge
    /// port if it is one (`ip -d link show <name>`).
    pub(crate) fn link_state(&mut self, name: &str) -> Result<LinkState> {
        let msg = Message::new(RTM_GETLINK, F_REQUEST | F_ACK, &ifinfomsg(0, 0))
            .attr_str(IFLA_IFNAME, name);
        let replies = self.request(|| format!("look up link {name}"), msg)?;
        let attrs = replies
            .first()
            .and_then(|r| r.get(16..))
            .unwrap_or_default();
        let up = attributes(attrs)
            .find(|(kind, _)| *kind == IFLA_OPERSTATE)
            .is_some_and(|(_, state)| state.first() == Some(&IF_OPER_UP));
        let port = attributes(attrs)
            .filter(|(kind, _)| *kind == IFLA_LINKINFO)
            .flat_map(|(_, info)| attributes(info))
            .filter(|(kind, _)| *kind == IFLA_INFO_SLAVE_DATA)
            .flat_map(|(_, data)| attributes(data))
            .find(|(kind, _)| *kind == IFLA_BRPORT_STATE)
            .and_then(|(_, state)| state.first().copied());
        Ok(LinkState {
            up,
            forwarding: port == Some(BR_STATE_FORWARDING),
        })
    }

    /// `ip addr add <addr>/<prefix> brd + dev <index>`
    pub(crate) fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let mut header = [0u8; 8];
        header[0] = libc::AF_INET as u8;
        header[1] = prefix;
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let broadcast = Ipv4Addr::from(u32::from(addr) | host_mask);
        let msg = Message::new(RTM_NEWADDR, F_REQUEST | F_ACK | F_CREATE | F_EXCL, &header)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets())
            .attr(IFA_BROADCAST, &broadcast.octets());
        self.request(
            || format!("add address {addr}/{prefix} to link {index}"),
            msg,
        )
        .map(drop)
    }
}

/// The `RTM_GETLINK` dump request.
fn link_dump() -> Message {
    Message::new(RTM_GETLINK, F_REQUEST | F_DUMP, &[0u8; 16])
}
