//! Whole frames read from and sent on an interface, by a packet socket:
//! how a link emulated in userspace carries frames between a container's
//! port and the bridge.
//!
//! Each frame comes after a `struct virtio_net_hdr` ([`VNET_HDR_LEN`]
//! bytes), as QEMU's backends exchange them: a veth hands over TCP and UDP
//! segments with their checksum left to the hardware, and large ones
//! unsegmented (GSO); the header says so, and the interface they are sent
//! on finishes the work, so frames cross the emulator as they are.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::kernel::sys::check;

/// `sizeof(struct virtio_net_hdr)`: flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset.
pub(crate) const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum is still to be computed.
pub(crate) const VNET_NEEDS_CSUM: u8 = 1;
/// The `skb->mark` of the frames a [`PortSocket::marked`] sends: the
/// redirect that hands an interface's frames to an emulator lets them pass.
pub(crate) const EMULATED_MARK: u32 = 0x6e68_656d;
/// `PACKET_VNET_HDR` of `linux/if_packet.h`.
const PACKET_VNET_HDR: libc::c_int = 15;

/// A packet socket on one interface: reads every frame it receives (not
/// those it sends) and sends whole frames on it.
pub(crate) struct PortSocket {
    fd: OwnedFd,
    index: u32,
}

impl PortSocket {
    /// Opens it on interface `index` of the calling thread's namespace.
    ///
    /// # References
    /// `packet(7)`: `PACKET_IGNORE_OUTGOING`, `PACKET_VNET_HDR`
    pub(crate) fn open(index: u32) -> io::Result<PortSocket> {
        let socket = Self::unbound(index)?;
        let at = address(index, (libc::ETH_P_ALL as u16).to_be());
        // SAFETY: `at` is a sockaddr_ll of the length given.
        check(unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                (&raw const at).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(socket)
    }

    /// A socket that only sends, on interface `index`, frames marked
    /// [`EMULATED_MARK`].
    ///
    /// # References
    /// `socket(7)`: `SO_MARK`
    pub(crate) fn marked(index: u32) -> io::Result<PortSocket> {
        let socket = Self::unbound(index)?;
        set_int(
            socket.fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            EMULATED_MARK as libc::c_int,
        )?;
        Ok(socket)
    }

    /// A packet socket for interface `index` that receives nothing yet.
    fn unbound(index: u32) -> io::Result<PortSocket> {
        // Protocol 0, then bound for every protocol: see `kernel::packet`
        // (no RCU wait).
        // SAFETY: socket takes no pointers.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        })?;
        // SAFETY: socket succeeded: `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for option in [libc::PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR] {
            set_int(fd.as_fd(), libc::SOL_PACKET, option, 1)?;
        }
        Ok(PortSocket { fd, index })
    }

    /// Reads one frame the interface received, without waiting; `None`
    /// when none is queued.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match rustix::io::read(&self.fd, &mut *buf) {
                Ok(n) => return Ok(Some(n)),
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `frame` (its virtio header, then its Ethernet header on) on
    /// the interface.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        // The frame's EtherType, already in network order.
        let protocol = frame
            .get(VNET_HDR_LEN + 12..VNET_HDR_LEN + 14)
            .map_or(0, |t| u16::from_ne_bytes([t[0], t[1]]));
        let to = address(self.index, protocol);
        // SAFETY: `frame` and `to` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for PortSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `setsockopt` of an int.
fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option reads an int, `value`, alive for the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A link-layer address: interface `index`, `protocol` in network order.
fn address(index: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_ifindex = index as i32;
    at.sll_protocol = protocol;
    at
}
