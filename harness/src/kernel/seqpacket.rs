//! A local channel between the harness's processes: a Unix
//! `SOCK_SEQPACKET` socket with an abstract name (message boundaries kept,
//! descriptors passed along with a message, the peer's user known).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// The most descriptors one message carries.
pub(crate) const MAX_FDS: usize = 4;
/// The longest message.
const MAX_LEN: usize = 64 << 10;

fn socket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn address(name: &str) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(name.as_bytes())?)
}

/// A socket bound to an abstract name (in the caller's network
/// namespace), not yet listening: the name is taken, connections are
/// refused until [`Bound::listen`].
pub(crate) struct Bound(OwnedFd);

impl Bound {
    /// Binds `name`; `AddrInUse` when another socket has it.
    pub(crate) fn bind(name: &str) -> io::Result<Bound> {
        let fd = socket()?;
        rustix::net::bind(&fd, &address(name)?)?;
        Ok(Bound(fd))
    }

    /// Starts accepting connections.
    pub(crate) fn listen(self) -> io::Result<Listener> {
        rustix::net::listen(&self.0, 64)?;
        Ok(Listener(self.0))
    }
}

/// A listening socket.
pub(crate) struct Listener(OwnedFd);

impl From<OwnedFd> for Listener {
    /// A listening socket this process inherited.
    fn from(fd: OwnedFd) -> Self {
        Listener(fd)
    }
}

impl Listener {
    /// The next connection.
    pub(crate) fn accept(&self) -> io::Result<Channel> {
        Ok(Channel(rustix::net::accept_with(
            &self.0,
            SocketFlags::CLOEXEC,
        )?))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// One end of a connection.
pub(crate) struct Channel(OwnedFd);

impl Channel {
    /// Connects to the socket named `name`, waiting at most `timeout` for
    /// room in its queue (as each send then does): `ConnectionRefused` when
    /// there is none, or it is bound but not listening yet.
    pub(crate) fn connect(name: &str, timeout: Duration) -> io::Result<Channel> {
        let fd = socket()?;
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Send,
            Some(timeout),
        )?;
        rustix::net::connect(&fd, &address(name)?)?;
        Ok(Channel(fd))
    }

    /// Two connected ends.
    #[cfg(test)]
    pub(crate) fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel(a), Channel(b)))
    }

    /// The peer's user id (as this process's user namespace sees it).
    pub(crate) fn peer_uid(&self) -> io::Result<u32> {
        Ok(rustix::net::sockopt::socket_peercred(&self.0)?.uid.as_raw())
    }

    /// Sends `bytes` and `fds` as one message.
    pub(crate) fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let sent = rustix::net::sendmsg(
            &self.0,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        if sent == bytes.len() {
            Ok(())
        } else {
            Err(io::Error::other("a message was sent in part"))
        }
    }

    /// The next message and the descriptors that came with it (close on
    /// exec), waiting at most `timeout` (forever with `None`):
    /// `UnexpectedEof` when the peer closed the connection, `TimedOut`
    /// when nothing came in time.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
        if !super::sys::poll_readable(self.0.as_fd(), timeout)? {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut bytes = vec![0; MAX_LEN];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &self.0,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let fds: Vec<OwnedFd> = control
            .drain()
            .flat_map(|message| match message {
                RecvAncillaryMessage::ScmRights(fds) => fds.collect(),
                _ => Vec::new(),
            })
            .collect();
        if got.bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
            return Err(io::Error::other("a message too long for its buffer"));
        }
        bytes.truncate(got.bytes);
        Ok((bytes, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_bytes_and_descriptors_and_the_peer_is_known() {
        let name = format!("netns-harness-test/{}", std::process::id());
        let bound = Bound::bind(&name).unwrap();
        // Bound but not listening: refused; a second bind: the name is taken.
        let refused = Channel::connect(&name, Duration::from_secs(5))
            .err()
            .unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            Bound::bind(&name).err().unwrap().kind(),
            io::ErrorKind::AddrInUse
        );
        let listener = bound.listen().unwrap();
        let client = Channel::connect(&name, Duration::from_secs(5)).unwrap();
        let server = listener.accept().unwrap();
        assert_eq!(
            server.peer_uid().unwrap(),
            rustix::process::geteuid().as_raw()
        );
        let (read, write) = super::super::sys::pipe().unwrap();
        client.send(b"hello", &[write.as_fd()]).unwrap();
        drop(write);
        let (bytes, fds) = server.recv(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        // The descriptor is the pipe's write end: what goes in comes out.
        rustix::io::write(&fds[0], b"x").unwrap();
        let mut buf = [0; 1];
        assert_eq!(rustix::io::read(&read, &mut buf).unwrap(), 1);
        assert_eq!(
            server
                .recv(Some(Duration::from_millis(50)))
                .err()
                .unwrap()
                .kind(),
            io::ErrorKind::TimedOut
        );
        drop(client);
        assert_eq!(
            server
                .recv(Some(Duration::from_secs(5)))
                .err()
                .unwrap()
                .kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            Channel::connect("netns-harness-test/nobody-here", Duration::from_secs(5))
                .err()
                .unwrap()
                .kind(),
            io::ErrorKind::ConnectionRefused
        );
    }
}
