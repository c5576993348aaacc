//! Recording the frames that cross one interface of a namespace: a packet
//! socket, opened close-on-exec and set up (bound to the interface,
//! promiscuous, non-blocking) by pnet's datalink channel, read by a thread
//! of its own into a ring of the last [`RING_BYTES`]. Frames are read with
//! `recv(MSG_TRUNC)`, so each keeps its true length on the wire even when
//! longer than [`SNAPLEN`] (a veth with offloads carries frames up to 64
//! KiB), and the thread looks at its stop flag after every frame, so that
//! [`Recording::finish`] returns promptly even on a flooded port. What the
//! frames mean is the capture's business.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender};

use crate::common::error::{Error, Result};
use crate::{kernel::netns, kernel::sys};

/// How often the capture thread looks at its stop flag when idle.
const POLL: Duration = Duration::from_millis(20);

/// After a stop, how long the capture thread goes on reading what is
/// already queued on its socket, at most.
pub const DRAIN_TIME: Duration = Duration::from_millis(100);

/// After a stop, how many queued frames the capture thread reads, at most.
const DRAIN_FRAMES: usize = 4096;

/// The most bytes kept of one frame (libpcap's largest snapshot length):
/// more than the 64 KiB a veth with segmentation offloads carries. A longer
/// frame is kept truncated, with its true length.
pub const SNAPLEN: usize = 262_144;

/// The most frame bytes a capture keeps: past it, the oldest frames go.
pub const RING_BYTES: usize = 1 << 20;

/// One frame as it crossed the interface.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// When it was read.
    pub at: SystemTime,
    /// Its first [`SNAPLEN`] bytes at most.
    pub data: Vec<u8>,
    /// Its length on the wire.
    pub len: usize,
}

/// A packet socket bound to one interface. The descriptor is owned by
/// pnet's channel halves (which close it when dropped); the capture reads
/// it directly, to learn each frame's true length.
struct PacketSocket {
    fd: RawFd,
    _channel: (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>),
}

impl PacketSocket {
    /// Opens a packet socket for every protocol (`ETH_P_ALL`) on the
    /// interface `index` of the calling thread's namespace.
    ///
    /// # References
    /// `packet(7)`
    fn open(name: &str, index: u32) -> std::io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing until pnet binds it to
        // the interface for every protocol (`ETH_P_ALL`). Opened for
        // `ETH_P_ALL` at once, it would be hooked on every interface, and
        // the bind would have to unhook it first, waiting for an RCU grace
        // period (about 14 ms, on every test's start).
        // SAFETY: socket takes no pointers.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: socket succeeded, so `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let iface = datalink::NetworkInterface {
            name: name.to_owned(),
            description: String::new(),
            index,
            mac: None,
            ips: Vec::new(),
            flags: 0,
        };
        // From here pnet owns the socket: it closes it on failure, and its
        // channel halves close it when dropped.
        let fd = fd.into_raw_fd();
        let config = datalink::Config {
            socket_fd: Some(fd),
            ..datalink::Config::default()
        };
        match datalink::channel(&iface, config)? {
            Channel::Ethernet(tx, rx) => Ok(PacketSocket {
                fd,
                _channel: (tx, rx),
            }),
            _ => Err(std::io::ErrorKind::Unsupported.into()),
        }
    }

    /// Reads one queued frame into `buf` without waiting: its true length
    /// (more than `buf.len()` when it was truncated), or `None` when
    /// nothing is queued.
    ///
    /// # References
    /// `recv(2)` (`MSG_TRUNC` on packet sockets)
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                return Ok(Some(n));
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(err),
            }
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A running recording of one interface's frames, both ways.
#[derive(Debug)]
pub(crate) struct Recording {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<VecDeque<Frame>>>,
}

impl Recording {
    /// Starts recording `interface` of the namespace `netns`; the caller
    /// stays in its own namespace. Frames are recorded from the moment this
    /// returns.
    pub(crate) fn start(netns: BorrowedFd<'_>, interface: &str) -> Result<Recording> {
        let name = interface.to_owned();
        let socket = netns::run_in(netns, || {
            // By index: listing every interface costs as much as the lab
            // has ports.
            let index = sys::if_index(&name)
                .map_err(|e| Error::os(format!("find interface {name} to capture on"), e))?;
            PacketSocket::open(&name, index)
                .map_err(|e| Error::os(format!("open a packet socket on {name}"), e))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("capture-{interface}"))
            .spawn(move || record(&socket, &flag))
            .map_err(|e| Error::os("start a capture thread", e))?;
        Ok(Recording {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the frames: every frame read until the call, then
    /// what was already queued, for at most [`DRAIN_TIME`] (on a flooded
    /// port the queue never empties; this still returns).
    pub(crate) fn finish(mut self) -> Vec<Frame> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
            .into()
    }
}

impl Drop for Recording {
    /// Stops without waiting: the thread ends after its current frame, or
    /// its next idle poll, and its drain.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads frames until stopped, looking at the flag after every frame and
/// every idle [`POLL`]; then drains the queue, boundedly (see
/// [`Recording::finish`]). Keeps the last [`RING_BYTES`].
fn record(socket: &PacketSocket, stop: &AtomicBool) -> VecDeque<Frame> {
    let mut ring = Ring::default();
    let mut buf = vec![0u8; SNAPLEN];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv(&mut buf) {
            Ok(Some(len)) => ring.push(&buf, len),
            Ok(None) => {
                // Nothing queued: wait for a frame or the next look at the flag.
                let fd = socket.as_raw_fd();
                if sys::poll_any(&[fd], POLL).is_err() {
                    return ring.frames;
                }
            }
            Err(_) => return ring.frames,
        }
    }
    let deadline = Instant::now() + DRAIN_TIME;
    for _ in 0..DRAIN_FRAMES {
        match socket.recv(&mut buf) {
            Ok(Some(len)) => ring.push(&buf, len),
            Ok(None) | Err(_) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    ring.frames
}

/// The last [`RING_BYTES`] of frames.
#[derive(Default)]
pub(crate) struct Ring {
    pub frames: VecDeque<Frame>,
    bytes: usize,
}

impl Ring {
    /// Keeps a frame of true length `len` whose first bytes are in `buf`.
    pub(crate) fn push(&mut self, buf: &[u8], len: usize) {
        let data = buf[..len.min(buf.len())].to_vec();
        self.bytes += data.len();
        self.frames.push_back(Frame {
            at: SystemTime::now(),
            data,
            len,
        });
        while self.bytes > RING_BYTES {
            self.bytes -= self.frames.pop_front().map_or(0, |f| f.data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_mebibyte() {
        let mut ring = Ring::default();
        let frame = vec![0u8; 1000];
        for _ in 0..2000 {
            ring.push(&frame, frame.len());
        }
        assert!(ring.bytes <= RING_BYTES);
        assert_eq!(ring.frames.len(), RING_BYTES / 1000);
    }
}
