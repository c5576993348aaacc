//! The two descriptors of a link emulated in userspace: a TAP device on the
//! bridge, standing in for the container's port, and a packet socket on
//! the port itself, taken off the bridge: frames from the container are
//! read from the port and written to the TAP device (the bridge receives
//! them), frames from the bridge are read from the TAP device and sent on
//! the port (the container receives them).
//!
//! Both carry each frame after a `struct virtio_net_hdr` ([`VNET_HDR_LEN`]
//! bytes), as QEMU's TAP backend does: a veth hands over TCP and UDP
//! segments with their checksum left to the hardware, and large ones
//! unsegmented (GSO); the header says so, and the other side finishes the
//! work, so frames cross the emulator as they are.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::kernel::sys::check;

/// `sizeof(struct virtio_net_hdr)`: flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset.
pub(crate) const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum is still to be computed.
pub(crate) const VNET_NEEDS_CSUM: u8 = 1;
/// `PACKET_VNET_HDR` of `linux/if_packet.h`.
const PACKET_VNET_HDR: libc::c_int = 15;

/// Reads one frame from `fd` into `buf` without waiting; `None` when none
/// is queued.
fn read_frame(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Ok(n) => return Ok(Some(n)),
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A TAP device, gone when its descriptor closes.
pub(crate) struct Tap {
    fd: OwnedFd,
}

impl Tap {
    /// Creates TAP device `name` in the calling thread's network namespace,
    /// non-blocking, without packet information before each frame.
    ///
    /// # References
    /// `Documentation/networking/tuntap.rst`: `TUNSETIFF`, `IFF_TAP`,
    /// `IFF_NO_PI`, `IFF_VNET_HDR`, `TUNSETOFFLOAD`
    pub(crate) fn create(name: &str) -> io::Result<Tap> {
        let fd = rustix::fs::open(
            "/dev/net/tun",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )?;
        // SAFETY: an all-zero ifreq is valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq, which `request` is, alive for the call.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut request) })?;
        // Frames from the bridge may come unsegmented, checksums to do.
        let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes an integer argument.
        check(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offload as libc::c_ulong,
            )
        })?;
        Ok(Tap { fd })
    }

    /// Reads one frame the bridge sent to the device, without waiting.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        read_frame(self.fd.as_fd(), buf)
    }

    /// Hands `frame` to the bridge, as if the device had received it.
    pub(crate) fn write(&self, frame: &[u8]) -> io::Result<()> {
        rustix::io::write(&self.fd, frame)
            .map(drop)
            .map_err(Into::into)
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

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
        let one: libc::c_int = 1;
        for option in [libc::PACKET_IGNORE_OUTGOING, PACKET_VNET_HDR] {
            // SAFETY: both options read an int, `one`, alive for the call.
            check(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    option,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            })?;
        }
        let at = address(index, (libc::ETH_P_ALL as u16).to_be());
        // SAFETY: `at` is a sockaddr_ll of the length given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const at).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PortSocket { fd, index })
    }

    /// Reads one frame the interface received, without waiting.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        read_frame(self.fd.as_fd(), buf)
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

/// A link-layer address: interface `index`, `protocol` in network order.
fn address(index: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: an all-zero sockaddr_ll is valid.
    let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_ifindex = index as i32;
    at.sll_protocol = protocol;
    at
}
