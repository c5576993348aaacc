//! `#[netns_test]` as a user writes it: each body runs in a freshly cloned
//! container on the process's shared bridge.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use netns_harness::prelude::*;
use netns_harness_suite::{needs, tool};

fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[needs("ip")]
#[netns_test]
fn a_sync_body_runs_as_pid_1_of_its_container(net: Net) {
    assert_eq!(std::process::id(), 1);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "a_sync_body_run"
    );
    let addrs = tool("ip")
        .args(["-o", "-4", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert!(
        addrs.contains(&format!("inet {}/{}", net.addr(), net.subnet().prefix())),
        "{addrs}"
    );
}

#[netns_test]
async fn an_async_body_gets_a_tokio_runtime(net: Net) {
    let listener = tokio::net::TcpListener::bind((net.addr(), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (client, server) = tokio::join!(
        tokio::net::TcpStream::connect((net.addr(), port)),
        listener.accept()
    );
    assert_eq!(client.unwrap().local_addr().unwrap(), server.unwrap().1);
}

#[netns_test]
async fn an_async_body_runs_on_the_current_thread_by_default() {
    use tokio::runtime::{Handle, RuntimeFlavor};
    assert_eq!(
        Handle::current().runtime_flavor(),
        RuntimeFlavor::CurrentThread
    );
    let body = std::thread::current().id();
    let task = tokio::spawn(async { std::thread::current().id() });
    assert_eq!(
        task.await.unwrap(),
        body,
        "a task ran off the body's thread"
    );
}

/// Two tasks that each wait, blocking their thread, until both run: they
/// can only meet on two worker threads at once.
#[netns_test(flavor = "multi_thread", worker_threads = 2, timeout = "20s")]
async fn a_multi_thread_body_runs_tasks_on_its_worker_threads() {
    use std::sync::{Arc, Condvar, Mutex};
    use tokio::runtime::{Handle, RuntimeFlavor};
    assert_eq!(
        Handle::current().runtime_flavor(),
        RuntimeFlavor::MultiThread
    );
    assert_eq!(Handle::current().metrics().num_workers(), 2);
    let running = Arc::new((Mutex::new(0), Condvar::new()));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let running = Arc::clone(&running);
            tokio::spawn(async move {
                let (count, changed) = &*running;
                let mut count = count.lock().unwrap();
                *count += 1;
                changed.notify_all();
                let (count, _) = changed
                    .wait_timeout_while(count, Duration::from_secs(5), |n| *n < 2)
                    .unwrap();
                assert_eq!(*count, 2, "the other task never ran alongside this one");
                std::thread::current().id()
            })
        })
        .collect();
    let mut threads = Vec::new();
    for task in tasks {
        threads.push(task.await.unwrap());
    }
    assert_ne!(threads[0], threads[1]);
    assert!(!threads.contains(&std::thread::current().id()));
}

#[netns_test]
fn a_body_may_return_ok() -> Result<(), String> {
    if std::process::id() == 1 {
        Ok(())
    } else {
        Err("not in a container".into())
    }
}

#[netns_test]
#[should_panic(expected = "the body's own message")]
fn a_panic_in_the_body_fails_the_test_with_its_message() {
    panic!("the body's own message");
}

#[netns_test]
#[should_panic(expected = "returned an error: \"it went wrong\"")]
fn an_err_from_the_body_fails_the_test() -> Result<(), String> {
    Err("it went wrong".into())
}

#[netns_test(timeout = "1s")]
#[should_panic(expected = "timed out after 1s; its container and every process in it were killed")]
fn a_body_past_its_timeout_is_killed() {
    std::thread::sleep(Duration::from_secs(30));
}

#[netns_test]
fn peers_share_the_bridge_and_die_with_the_test(net: Net) {
    fn server() {
        let listener = TcpListener::bind(("0.0.0.0", 7100)).unwrap();
        println!("listening");
        let (stream, peer) = listener.accept().unwrap();
        writeln!(&stream, "hello {}", peer.ip()).unwrap();
    }
    let mut peer = net
        .spawn(&Spec::function(server).name("server").stdout(Stdio::Piped))
        .unwrap();
    assert!(net.subnet().contains(peer.addr4().unwrap()));
    assert_ne!(peer.addr(), net.addr());
    let mut lines = BufReader::new(peer.take_stdout().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    let stream = TcpStream::connect((peer.addr(), 7100)).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert_eq!(answer.trim(), format!("hello {}", net.addr()));
}

#[netns_test]
fn the_outside_sees_the_nat_address(net: Net) {
    fn outside_server() {
        let listener = TcpListener::bind(("0.0.0.0", 7200)).unwrap();
        println!("listening");
        let (_, peer) = listener.accept().unwrap();
        println!("{}", peer.ip());
    }
    let mut server = net
        .spawn_outside(&Spec::function(outside_server).stdout(Stdio::Piped))
        .unwrap();
    let mut lines = BufReader::new(server.take_stdout().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    TcpStream::connect((net.outside_addr(), 7200)).unwrap();
    let seen: Ipv4Addr = lines.next().unwrap().unwrap().parse().unwrap();
    assert_eq!(seen, net.public_addr());
    assert_ne!(seen, net.addr());
}

#[needs("ping", "ip")]
#[netns_test(network = "private")]
fn a_private_network_has_a_bridge_of_its_own(net: Net) {
    // Nothing but the gateway answers on a private bridge: ARP for the
    // addresses the shared lab hands out first finds nobody.
    let neighbours = tool("sh")
        .args([
            "-c",
            "ping -c1 -W1 \"$0\" >/dev/null; ip neigh",
            &net.gateway().to_string(),
        ])
        .output()
        .unwrap();
    let neighbours = String::from_utf8_lossy(&neighbours.stdout);
    assert_eq!(neighbours.lines().count(), 1, "{neighbours}");
    assert!(own_netns().starts_with("net:["));
}

mod with_rstest {
    use netns_harness::prelude::*;
    use rstest::rstest;

    // Every case runs in a container of its own, named after the case.
    #[rstest]
    #[case(1)]
    #[case(2)]
    #[netns_test]
    fn each_case_gets_its_own_container(#[case] n: u32) {
        assert_eq!(std::process::id(), 1);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname.trim(), format!("case_{n}"));
        let net = Net::current();
        assert!(net.subnet().contains(net.addr4().unwrap()));
    }
}

#[netns_test]
fn lab_shared_in_a_body_is_its_tests_lab(net: Net) {
    use std::os::fd::AsRawFd;
    let shared = Lab::shared().unwrap();
    assert_eq!(
        shared.lab_netns().as_raw_fd(),
        net.lab().lab_netns().as_raw_fd(),
        "Lab::shared() made another lab inside the body"
    );
    assert_eq!(shared.subnet(), net.subnet());
}
