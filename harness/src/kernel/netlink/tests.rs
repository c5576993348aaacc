//! Unit tests of `netlink`.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use netlink_packet_core::{DefaultNla, Emitable, NLMSG_NOOP};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};

use super::*;

/// The attributes an ack carries after the request: a message and the
/// offset of the attribute it blames.
fn ack_attributes(text: &str) -> Vec<u8> {
    let mut text = text.as_bytes().to_vec();
    text.push(0);
    let attributes = [
        DefaultNla::new(NLMSGERR_ATTR_MSG, text),
        DefaultNla::new(3, 20u32.to_ne_bytes().to_vec()), // NLMSGERR_ATTR_OFFS
    ];
    let mut bytes = vec![0; attributes.as_slice().buffer_len()];
    attributes.as_slice().emit(&mut bytes);
    bytes
}

/// A link request as the kernel echoes it.
fn echoed_request() -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName("eth0".into()));
    bytes_of(request(RouteNetlinkMessage::NewLink(link), NLM_F_ACK))
}

#[test]
fn ext_ack_message_is_found_after_the_capped_request() {
    let mut error = ErrorMessage::default();
    error.code = std::num::NonZeroI32::new(-libc::EINVAL);
    error.header = echoed_request()[..NLMSG_HDRLEN].to_vec();
    error.header.extend(ack_attributes("bad"));
    let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
    assert_eq!(error_text(&error, flags).as_deref(), Some("bad"));
    assert_eq!(error_text(&error, NLM_F_CAPPED), None);
}

#[test]
fn ext_ack_message_is_found_after_a_whole_request() {
    let mut error = ErrorMessage::default();
    error.code = std::num::NonZeroI32::new(-libc::EINVAL);
    error.header = echoed_request();
    error.header.extend(ack_attributes("bad name"));
    assert_eq!(
        error_text(&error, NLM_F_ACK_TLVS).as_deref(),
        Some("bad name")
    );
}

#[test]
fn ext_ack_message_of_a_failed_dump_follows_the_errno() {
    let mut done = DoneMessage::default();
    done.code = -libc::EOPNOTSUPP;
    done.extended_ack = ack_attributes("no dump here");
    assert_eq!(
        done_text(&done, NLM_F_ACK_TLVS).as_deref(),
        Some("no dump here")
    );
    assert_eq!(done_text(&done, 0), None);
}

fn elapsed_of<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    (f(), start.elapsed())
}

/// A request the kernel does not answer: `NLMSG_NOOP` without
/// `NLM_F_ACK`.
fn noop() -> NetlinkMessage<RouteNetlinkMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.message_type = NLMSG_NOOP;
    NetlinkMessage::new(header, NetlinkPayload::Noop)
}

/// A request for an ack, whatever the "kernel" makes of it.
fn acked() -> NetlinkMessage<RouteNetlinkMessage> {
    request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_ACK,
    )
}

#[test]
fn a_request_the_kernel_never_answers_times_out() {
    let mut socket = Socket::open(libc::NETLINK_ROUTE)
        .unwrap()
        .with_timeout(Duration::from_millis(200));
    let (result, took) = elapsed_of(|| socket.transact(&mut [noop()]));
    let refusal = result.expect_err("a reply came to a request without NLM_F_ACK");
    assert_eq!(refusal.error.kind(), io::ErrorKind::TimedOut, "{refusal:?}");
    assert!(
        refusal
            .error
            .to_string()
            .contains("no reply from the kernel within 200ms")
    );
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn the_kernels_refusal_carries_its_errno() {
    let mut socket = Socket::open(libc::NETLINK_ROUTE).unwrap();
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName("no-such-link0".into()));
    let refusal = socket
        .transact(&mut [request(RouteNetlinkMessage::GetLink(link), NLM_F_ACK)])
        .expect_err("a link that does not exist was found");
    assert_eq!(refusal.error.raw_os_error(), Some(libc::ENODEV));
}

/// A socket whose "kernel" is the other end of a datagram socketpair.
fn seam(timeout: Duration) -> (Socket, UnixDatagram) {
    let (ours, kernel) = UnixDatagram::pair().unwrap();
    // SAFETY: the descriptor is open and ours alone; the netlink socket
    // takes it over.
    let socket = unsafe { netlink_sys::Socket::from_raw_fd(OwnedFd::from(ours).into_raw_fd()) };
    (Socket::from_socket(socket).with_timeout(timeout), kernel)
}

#[test]
fn an_answer_through_the_seam_is_read() {
    let (mut socket, kernel) = seam(Duration::from_secs(5));
    let answer = std::thread::spawn(move || {
        let mut request = [0u8; 256];
        let n = kernel.recv(&mut request).unwrap();
        let request = NetlinkBuffer::new_checked(&request[..n]).unwrap();
        // An ack: errno 0, then the request's header.
        let mut ack = ErrorMessage::default();
        ack.header = request.into_inner()[..NLMSG_HDRLEN].to_vec();
        let mut header = NetlinkHeader::default();
        header.sequence_number = NetlinkBuffer::new(&ack.header).sequence_number();
        let ack = NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(ack));
        kernel.send(&bytes_of(ack)).unwrap();
    });
    let replies = socket.transact(&mut [acked()]).unwrap();
    assert!(replies.is_empty());
    answer.join().unwrap();
}

#[test]
fn a_truncated_reply_is_an_error_at_once() {
    let (mut socket, kernel) = seam(Duration::from_secs(5));
    kernel.send(&vec![0u8; RECV_BUFFER + 4096]).unwrap();
    let (result, took) = elapsed_of(|| socket.transact(&mut [acked()]));
    let refusal = result.expect_err("a truncated reply was accepted");
    assert_eq!(refusal.error.kind(), io::ErrorKind::InvalidData);
    let expected = format!("a reply of {} bytes was cut", RECV_BUFFER + 4096);
    assert!(refusal.error.to_string().contains(&expected), "{refusal:?}");
    assert!(took < Duration::from_secs(1), "it waited {took:?}");
}

extern "C" fn ignore(_: libc::c_int) {}

#[test]
fn signals_do_not_restart_the_wait() {
    use std::os::unix::thread::JoinHandleExt;
    // A handler (not SIG_IGN), so that each signal interrupts poll.
    // SAFETY: a zeroed sigaction with a valid handler and no flags.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as libc::sighandler_t;
        assert_eq!(
            libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut()),
            0
        );
    }
    let (mut socket, _kernel) = seam(Duration::from_millis(300));
    let waiter = std::thread::spawn(move || elapsed_of(|| socket.transact(&mut [acked()])));
    let thread = waiter.as_pthread_t();
    // A signal every 10 ms for 3 s: a wait that restarted its 300 ms
    // after each would last the whole 3 s.
    let until = Instant::now() + Duration::from_secs(3);
    while !waiter.is_finished() && Instant::now() < until {
        // SAFETY: the thread is joinable (not yet joined), so its
        // pthread_t is valid.
        unsafe { libc::pthread_kill(thread, libc::SIGURG) };
        std::thread::sleep(Duration::from_millis(10));
    }
    let (result, took) = waiter.join().unwrap();
    let refusal = result.expect_err("no reply was sent");
    assert_eq!(refusal.error.kind(), io::ErrorKind::TimedOut, "{refusal:?}");
    assert!(took < Duration::from_secs(1), "the wait lasted {took:?}");
}
