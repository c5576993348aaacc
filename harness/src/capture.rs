//! Packet capture on an interface of a lab namespace, with pnet's datalink
//! channel: what the far side of the NAT saw.

use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use pnet::datalink::{self, Channel, DataLinkReceiver};
use pnet::packet::Packet;
use pnet::packet::ethernet::{EtherTypes, EthernetPacket};
use pnet::packet::icmp::IcmpPacket;
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::ipv4::Ipv4Packet;
use pnet::packet::tcp::TcpPacket;
use pnet::packet::udp::UdpPacket;

use crate::error::{Error, Result};
use crate::{netns, sys};

/// How often the capture thread looks at its stop flag when idle.
const POLL: Duration = Duration::from_millis(20);

/// The most frame bytes a capture keeps: past it, the oldest frames go.
pub const RING_BYTES: usize = 1 << 20;

/// One frame as it crossed the interface.
#[derive(Clone, Debug)]
struct Frame {
    at: SystemTime,
    data: Vec<u8>,
}

/// The transport protocol of a captured packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ICMP, with its type.
    Icmp(u8),
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Another IP protocol number.
    Other(u8),
}

/// One IPv4 packet seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Its protocol.
    pub protocol: Protocol,
    /// Its source address.
    pub src: Ipv4Addr,
    /// Its source port (TCP and UDP).
    pub src_port: Option<u16>,
    /// Its destination address.
    pub dst: Ipv4Addr,
    /// Its destination port (TCP and UDP).
    pub dst_port: Option<u16>,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |addr: Ipv4Addr, port: Option<u16>| match port {
            Some(port) => format!("{addr}:{port}"),
            None => addr.to_string(),
        };
        let protocol = match self.protocol {
            Protocol::Icmp(kind) => format!("icmp type {kind}"),
            Protocol::Tcp => "tcp".to_owned(),
            Protocol::Udp => "udp".to_owned(),
            Protocol::Other(n) => format!("ip proto {n}"),
        };
        write!(
            f,
            "{protocol} {} > {}",
            end(self.src, self.src_port),
            end(self.dst, self.dst_port)
        )
    }
}

fn observe(frame: &[u8]) -> Option<Observed> {
    let ethernet = EthernetPacket::new(frame)?;
    if ethernet.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new(ethernet.payload())?;
    let (protocol, ports) = match ip.get_next_level_protocol() {
        IpNextHeaderProtocols::Tcp => {
            let tcp = TcpPacket::new(ip.payload())?;
            (
                Protocol::Tcp,
                Some((tcp.get_source(), tcp.get_destination())),
            )
        }
        IpNextHeaderProtocols::Udp => {
            let udp = UdpPacket::new(ip.payload())?;
            (
                Protocol::Udp,
                Some((udp.get_source(), udp.get_destination())),
            )
        }
        IpNextHeaderProtocols::Icmp => (
            Protocol::Icmp(IcmpPacket::new(ip.payload())?.get_icmp_type().0),
            None,
        ),
        other => (Protocol::Other(other.0), None),
    };
    Some(Observed {
        protocol,
        src: ip.get_source(),
        src_port: ports.map(|p| p.0),
        dst: ip.get_destination(),
        dst_port: ports.map(|p| p.1),
    })
}

/// A running capture of the frames crossing one interface, both ways; it
/// keeps the last [`RING_BYTES`] of them.
#[derive(Debug)]
pub struct Capture {
    interface: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<VecDeque<Frame>>>,
}

impl Capture {
    /// Starts capturing on `interface` of the namespace `netns`; the
    /// caller stays in its own namespace. Packets are recorded from the
    /// moment this returns.
    pub fn start(netns: BorrowedFd<'_>, interface: &str) -> Result<Capture> {
        let name = interface.to_owned();
        let mut rx = netns::run_in(netns, || {
            // By index: listing every interface costs as much as the lab
            // has ports.
            let index = sys::if_index(&name)
                .map_err(|e| Error::os(format!("find interface {name} to capture on"), e))?;
            let iface = datalink::NetworkInterface {
                name: name.clone(),
                description: String::new(),
                index,
                mac: None,
                ips: Vec::new(),
                flags: 0,
            };
            let config = datalink::Config {
                read_timeout: Some(POLL),
                ..datalink::Config::default()
            };
            match datalink::channel(&iface, config) {
                Ok(Channel::Ethernet(_, rx)) => Ok(rx),
                Ok(_) => Err(Error::os(
                    format!("capture on {name}"),
                    std::io::ErrorKind::Unsupported.into(),
                )),
                Err(e) => Err(Error::os(format!("open a packet socket on {name}"), e)),
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("capture-{interface}"))
            .spawn(move || record(rx.as_mut(), &flag))
            .map_err(|e| Error::os("start a capture thread", e))?;
        Ok(Capture {
            interface: interface.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// Stops, after reading every frame that reached the interface before
    /// the call, and returns what was seen.
    pub fn stop(mut self) -> Observations {
        let frames: Vec<Frame> = self.finish().into();
        Observations {
            interface: self.interface.clone(),
            packets: frames.iter().filter_map(|f| observe(&f.data)).collect(),
            frames,
        }
    }

    fn finish(&mut self) -> VecDeque<Frame> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    /// Stops without waiting: the thread ends at its next idle poll.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads frames until stopped, then until the socket's queue is empty,
/// keeping the last [`RING_BYTES`].
fn record(rx: &mut dyn DataLinkReceiver, stop: &AtomicBool) -> VecDeque<Frame> {
    let mut seen = VecDeque::new();
    let mut bytes = 0;
    loop {
        match rx.next() {
            Ok(frame) => {
                bytes += frame.len();
                seen.push_back(Frame {
                    at: SystemTime::now(),
                    data: frame.to_vec(),
                });
                while bytes > RING_BYTES {
                    bytes -= seen.pop_front().map_or(0, |f| f.data.len());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if stop.load(Ordering::SeqCst) {
                    return seen;
                }
            }
            Err(_) => return seen,
        }
    }
}

/// The packets a [`Capture`] saw.
#[derive(Clone, Debug)]
pub struct Observations {
    interface: String,
    frames: Vec<Frame>,
    packets: Vec<Observed>,
}

impl Observations {
    /// How many frames were kept.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Writes the frames to `path` as a pcap file (Ethernet), readable by
    /// `tcpdump -r` and Wireshark.
    pub fn write_pcap(&self, path: &Path) -> Result<()> {
        let failed = |e: pcap_file::PcapError| {
            Error::os(
                format!("write the capture {}", path.display()),
                std::io::Error::other(e),
            )
        };
        let file = std::fs::File::create(path)
            .map_err(|e| Error::os(format!("create the capture {}", path.display()), e))?;
        let mut writer =
            pcap_file::pcap::PcapWriter::new(std::io::BufWriter::new(file)).map_err(failed)?;
        for frame in &self.frames {
            let at = frame
                .at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let len = u32::try_from(frame.data.len()).unwrap_or(u32::MAX);
            writer
                .write_packet(&pcap_file::pcap::PcapPacket::new(at, len, &frame.data))
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Every packet, in the order seen.
    pub fn packets(&self) -> &[Observed] {
        &self.packets
    }

    fn listing(&self) -> String {
        let lines: Vec<String> = self.packets.iter().map(|p| format!("  {p}")).collect();
        if lines.is_empty() {
            format!("nothing was seen on {}", self.interface)
        } else {
            format!("seen on {}:\n{}", self.interface, lines.join("\n"))
        }
    }

    /// Asserts that traffic from `container` towards `destination` crossed
    /// the interface with its source rewritten to `public`, and that
    /// `container`'s address never appeared there.
    ///
    /// # Panics
    /// With the packets seen, when either does not hold.
    #[track_caller]
    pub fn assert_source_rewritten(
        &self,
        container: Ipv4Addr,
        public: Ipv4Addr,
        destination: Ipv4Addr,
    ) {
        let leaked: Vec<&Observed> = self
            .packets
            .iter()
            .filter(|p| p.src == container || p.dst == container)
            .collect();
        assert!(
            leaked.is_empty(),
            "the container's own address {container} appeared on {} ({} packets); {}",
            self.interface,
            leaked.len(),
            self.listing()
        );
        assert!(
            self.packets
                .iter()
                .any(|p| p.src == public && p.dst == destination),
            "no packet from the NAT's address {public} to {destination}; {}",
            self.listing()
        );
    }
}
