//! The child's network: `lo` and `eth0` up, `eth0`'s address and default
//! route, set with the classic interface ioctls (no parsing, no allocation).

use std::ffi::c_char;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter, Updater, ioctl};
use rustix::net::{AddressFamily, SocketType};
use rustix::time::{ClockId, Timespec};

use crate::common::protocol::Stage;

use super::*;

/// The `struct rtentry` of `SIOCADDRT` (x86_64 and other LP64 layouts).
#[repr(C)]
pub(super) struct RtEntry {
    rt_pad1: libc::c_ulong,
    pub(super) rt_dst: libc::sockaddr,
    pub(super) rt_gateway: libc::sockaddr,
    pub(super) rt_genmask: libc::sockaddr,
    pub(super) rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    pub(super) rt_metric: libc::c_short,
    pub(super) rt_dev: *mut c_char,
    pub(super) rt_mtu: libc::c_ulong,
    pub(super) rt_window: libc::c_ulong,
    pub(super) rt_irtt: libc::c_ushort,
}

pub(super) fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size and sockaddr has no
    // invalid bit patterns.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

pub(super) fn ifreq(name: &[u8]) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as c_char;
    }
    req
}

/// Reads an interface's settings into `req` (`SIOCGIF*`).
pub(super) fn get_if<const OP: Opcode>(
    sock: BorrowedFd<'_>,
    req: &mut libc::ifreq,
) -> rustix::io::Result<()> {
    // SAFETY: `OP` is a `SIOCGIF*` request, which fills an ifreq.
    unsafe { ioctl(sock, Updater::<OP, libc::ifreq>::new(req)) }
}

/// Changes an interface's settings from `req` (`SIOCSIF*`).
pub(super) fn set_if<const OP: Opcode>(
    sock: BorrowedFd<'_>,
    req: libc::ifreq,
) -> rustix::io::Result<()> {
    // SAFETY: `OP` is a `SIOCSIF*` request, which reads an ifreq.
    unsafe { ioctl(sock, Setter::<OP, libc::ifreq>::new(req)) }
}

pub(super) const SIOCGIFFLAGS: Opcode = libc::SIOCGIFFLAGS as Opcode;
pub(super) const SIOCSIFFLAGS: Opcode = libc::SIOCSIFFLAGS as Opcode;
pub(super) const SIOCSIFHWADDR: Opcode = libc::SIOCSIFHWADDR as Opcode;
pub(super) const SIOCSIFADDR: Opcode = libc::SIOCSIFADDR as Opcode;
pub(super) const SIOCSIFNETMASK: Opcode = libc::SIOCSIFNETMASK as Opcode;
pub(super) const SIOCSIFBRDADDR: Opcode = libc::SIOCSIFBRDADDR as Opcode;
pub(super) const SIOCADDRT: Opcode = libc::SIOCADDRT as Opcode;
pub(super) const SIOCGIFINDEX: Opcode = libc::SIOCGIFINDEX as Opcode;

// The kernel's layouts of `struct rtentry` and `struct in6_rtmsg` on
// x86_64 and other LP64 targets.
const _: () = assert!(std::mem::size_of::<RtEntry>() == 120);
const _: () = assert!(std::mem::size_of::<In6RtMsg>() == 80);

/// The `struct in6_rtmsg` of `SIOCADDRT` on an IPv6 socket.
#[repr(C)]
struct In6RtMsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// The route type of `in6_rtmsg`: a unicast route (`RTN_UNICAST`; the
/// kernel takes it as the route's type).
const RTN_UNICAST: u32 = 1;

fn in6(addr: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: addr.octets(),
    }
}

/// A datagram socket of `family` for interface ioctls (failing at
/// `stage`), left open: it is close-on-exec, and closing it by dropping
/// would go through libc.
fn ioctl_socket(family: AddressFamily, stage: Stage) -> Result<BorrowedFd<'static>, Failure> {
    let sock = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .at(stage)?;
    let fd = rustix::fd::IntoRawFd::into_raw_fd(sock);
    // SAFETY: the descriptor was just opened, and nothing closes it before
    // exec.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Gives `eth0` (interface `index`) its IPv6 address, usable at once
/// (duplicate address detection is off), and the default route through
/// the gateway, with `SIOCSIFADDR` and `SIOCADDRT` on an IPv6 socket.
fn configure_v6(v6: &V6Config, index: libc::c_int) -> Result<(), Failure> {
    let sock = ioctl_socket(AddressFamily::INET6, Stage::Address6)?;
    let req = libc::in6_ifreq {
        ifr6_addr: in6(v6.addr),
        ifr6_prefixlen: u32::from(v6.prefix),
        ifr6_ifindex: index,
    };
    // SAFETY: SIOCSIFADDR on an IPv6 socket reads a struct in6_ifreq.
    unsafe { ioctl(sock, Setter::<SIOCSIFADDR, libc::in6_ifreq>::new(req)) }.at(Stage::Address6)?;
    // The kernel finishes the address's (skipped) duplicate address
    // detection on a work queue: until then the address is tentative, and
    // neither a source nor bindable. It is usable once a socket binds it.
    let usable = rustix::net::SocketAddrV6::new(v6.addr, 0, 0, 0);
    await_until(Stage::Address6, || match rustix::net::bind(sock, &usable) {
        Ok(()) => Ok(true),
        Err(Errno::ADDRNOTAVAIL) => Ok(false),
        Err(e) => Err(Failure(Stage::Address6, e)),
    })?;
    let route = In6RtMsg {
        dst: in6(Ipv6Addr::UNSPECIFIED),
        src: in6(Ipv6Addr::UNSPECIFIED),
        gateway: in6(v6.gateway),
        kind: RTN_UNICAST,
        dst_len: 0,
        src_len: 0,
        metric: 1,
        info: 0,
        flags: (libc::RTF_UP | libc::RTF_GATEWAY).into(),
        ifindex: index,
    };
    // SAFETY: SIOCADDRT on an IPv6 socket reads a struct in6_rtmsg.
    unsafe { ioctl(sock, Setter::<SIOCADDRT, In6RtMsg>::new(route)) }.at(Stage::Route6)
}

/// Brings `lo` and `eth0` up (without IPv6 duplicate address detection)
/// and gives `eth0` its addresses and default routes, with the classic
/// interface ioctls (no parsing, no allocation).
pub(super) fn configure_network(net: &IfConfig) -> Result<(), Failure> {
    let sock = ioctl_socket(AddressFamily::INET, Stage::Loopback)?;
    // IPv6 link-local addresses usable at once, without duplicate address
    // detection (best effort: IPv6 may be off).
    if let Ok(dad) = rustix::fs::open(
        c"/proc/sys/net/ipv6/conf/eth0/accept_dad",
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let dad = std::mem::ManuallyDrop::new(dad);
        let _ = rustix::io::write(&*dad, b"0");
    }
    if let Some(mac) = net.mac {
        // SAFETY: an all-zero sockaddr is valid.
        let mut hwaddr: libc::sockaddr = unsafe { std::mem::zeroed() };
        hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as c_char;
        }
        let mut eth = ifreq(b"eth0");
        eth.ifr_ifru.ifru_hwaddr = hwaddr;
        set_if::<SIOCSIFHWADDR>(sock, eth).at(Stage::Address)?;
    }
    for (name, stage) in [(&b"lo"[..], Stage::Loopback), (b"eth0", Stage::Address)] {
        let mut link = ifreq(name);
        get_if::<SIOCGIFFLAGS>(sock, &mut link).at(stage)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { link.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        set_if::<SIOCSIFFLAGS>(sock, link).at(stage)?;
    }
    let eth0 = |addr| {
        let mut eth = ifreq(b"eth0");
        eth.ifr_ifru.ifru_addr = sockaddr(addr);
        eth
    };
    if let Some(v4) = &net.v4 {
        set_if::<SIOCSIFADDR>(sock, eth0(v4.addr)).at(Stage::Address)?;
        set_if::<SIOCSIFNETMASK>(sock, eth0(v4.netmask)).at(Stage::Address)?;
        set_if::<SIOCSIFBRDADDR>(sock, eth0(v4.broadcast)).at(Stage::Address)?;
    }
    await_running(sock)?;
    if let Some(v6) = &net.v6 {
        let mut eth = ifreq(b"eth0");
        get_if::<SIOCGIFINDEX>(sock, &mut eth).at(Stage::Address6)?;
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        configure_v6(v6, unsafe { eth.ifr_ifru.ifru_ifindex })?;
    }
    let Some(v4) = &net.v4 else {
        return Ok(());
    };
    // SAFETY: an all-zero rtentry is valid.
    let mut route: RtEntry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(v4.gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    // SAFETY: SIOCADDRT reads a struct rtentry.
    unsafe { ioctl(sock, Setter::<SIOCADDRT, RtEntry>::new(route)) }.at(Stage::Route)
}

/// Waits until `eth0` is operationally up (`IFF_RUNNING`): the kernel
/// processes carrier changes asynchronously, and until then drops what the
/// link sends.
pub(super) fn await_running(sock: BorrowedFd<'_>) -> Result<(), Failure> {
    await_until(Stage::Carrier, || {
        let mut eth = ifreq(b"eth0");
        get_if::<SIOCGIFFLAGS>(sock, &mut eth).at(Stage::Carrier)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        Ok(unsafe { eth.ifr_ifru.ifru_flags } & libc::IFF_RUNNING as libc::c_short != 0)
    })
}

/// Polls `ready` with growing pauses until it holds, for at most 30 s;
/// then fails at `stage`.
fn await_until(
    stage: Stage,
    mut ready: impl FnMut() -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let start = rustix::time::clock_gettime(ClockId::Monotonic);
    let mut pause_ns = 20_000;
    loop {
        if ready()? {
            return Ok(());
        }
        let now = rustix::time::clock_gettime(ClockId::Monotonic);
        if now.tv_sec - start.tv_sec > 30 {
            return Err(Failure(stage, Errno::TIMEDOUT));
        }
        let _ = rustix::thread::nanosleep(&Timespec {
            tv_sec: 0,
            tv_nsec: pause_ns,
        });
        pause_ns = (pause_ns * 2).min(5_000_000);
    }
}
