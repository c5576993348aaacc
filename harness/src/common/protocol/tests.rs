//! Every message survives its encoding.

use super::*;
use crate::common::nat::{Filtering, Mapping, Nat, Router, Uplink};
use crate::common::subnet::Stack;
use std::net::Ipv6Addr;

fn context(stack: Stack, addrs: Vec<Ipv4Addr>, hosts: Vec<HostEntry>) -> Context {
    Context {
        lab_fd: 5,
        outside_fd: 6,
        result_fd: 9,
        addr: Ipv4Addr::new(10, 200, 0, 2),
        port: "v1f".into(),
        view: LabView {
            addressing: Addressing {
                stack,
                subnet: "10.200.0.0/16".parse().unwrap(),
                subnet6: "fd00:7::/64".parse().unwrap(),
                nat66: stack == Stack::V6,
            },
            uplink: Uplink {
                public: Ipv4Addr::new(203, 0, 113, 2),
                outside: Ipv4Addr::new(203, 0, 113, 10),
                router: Router::Translating(
                    Nat::new(Mapping::AddressDependent, Filtering::EndpointIndependent)
                        .hairpinning(false)
                        .udp_timeout(std::time::Duration::from_secs(7)),
                ),
                internet: true,
            },
            bridge: "br0".into(),
            bridge_index: 3,
            port_prefix: "t1fp".into(),
            ahead: 3,
            addrs,
            hosts,
        },
    }
}

#[test]
fn a_context_survives_the_environment() {
    let hosts = vec![
        HostEntry {
            addrs: vec![
                Ipv4Addr::new(10, 200, 0, 9).into(),
                "fd00:7::9".parse::<Ipv6Addr>().unwrap().into(),
            ],
            name: Some("a_test".into()),
            aliases: vec!["db.lab".into(), "db".into()],
        },
        HostEntry {
            addrs: vec![Ipv4Addr::new(198, 18, 0, 2).into()],
            name: None,
            aliases: vec!["example.com".into()],
        },
    ];
    for (stack, addrs, hosts) in [
        (Stack::V4, Vec::new(), Vec::new()),
        (
            Stack::Dual,
            vec![Ipv4Addr::new(10, 200, 0, 3), Ipv4Addr::new(10, 200, 0, 4)],
            hosts.clone(),
        ),
        (Stack::V6, Vec::new(), hosts.clone()),
    ] {
        let context = context(stack, addrs, hosts);
        assert_eq!(Context::decode(&context.encode()), Some(context));
    }
    let text = context(Stack::Dual, Vec::new(), hosts).encode();
    assert_eq!(Context::decode(&text[..text.len() - 2]), None);
    assert_eq!(Context::decode(&format!("{text}00")), None);
    assert_eq!(Context::decode("zz"), None);
}

#[test]
fn an_outcome_survives_the_pipe() {
    let peer = |pid, ended: Option<&str>| Peer {
        pid,
        name: format!("peer {pid}: with spaces"),
        addr: "fd00:200::3".parse().unwrap(),
        ended: ended.map(str::to_owned),
    };
    for end in [
        BodyEnd::Passed,
        BodyEnd::Returned("Os { code: 2 }".into()),
        BodyEnd::Panicked("line one\nline two\u{1e}".into()),
    ] {
        let outcome = Outcome {
            end,
            peers: vec![peer(7, None), peer(8, Some("exit status: 0"))],
            in_force: vec!["fault partition a <-> b: 3 matched, 3 dropped".into()],
        };
        let bytes = outcome.encode();
        assert_eq!(Outcome::decode(&bytes), Some(outcome));
        assert_eq!(Outcome::decode(&bytes[..bytes.len() - 1]), None);
    }
    assert_eq!(Outcome::decode(&[9]), None);
}

#[test]
fn every_stage_has_its_code() {
    for &stage in Stage::ALL {
        assert_eq!(Stage::from_code(stage.code()), Some(stage));
    }
    assert_eq!(Stage::from_code(Stage::ALL.len() as u16), None);
}

#[test]
fn reports_survive_the_pipe() {
    let reports = Stage::ALL
        .iter()
        .map(|&stage| Report::Failed {
            stage,
            errno: libc::EPERM,
        })
        .chain([
            Report::Started,
            Report::Configured,
            Report::Released { pid: 4_000_000 },
            Report::Failed {
                stage: Stage::Exec,
                errno: -1,
            },
        ]);
    for report in reports {
        assert_eq!(Report::decode(report.encode()), Some(report));
    }
    assert_eq!(Report::decode([0; Report::LEN]), None);
    assert_eq!(Report::decode([3, 0, 0xff, 0xff, 0, 0, 0, 0]), None);
}

#[test]
fn a_function_ref_survives_the_environment() {
    for offset in [0, 1, u64::MAX, 0x1234_5678_9abc] {
        let f = FunctionRef(offset);
        assert_eq!(FunctionRef::decode(&f.encode()), Some(f));
    }
    assert_eq!(FunctionRef::decode("12"), None);
}

#[test]
fn keeper_messages_survive_the_socket() {
    use keeper::KeeperRole;
    for request in [
        Request::Hello,
        Request::Lab(Stack::V6),
        Request::Addresses(Stack::Dual, 64),
    ] {
        assert_eq!(Request::decode(&request.encode()), Some(request));
    }
    let view = context(Stack::Dual, vec![Ipv4Addr::new(10, 200, 0, 9)], Vec::new()).view;
    for reply in [
        Reply::Welcome { rootless: true },
        Reply::Lab(view),
        Reply::Addresses(vec![
            Ipv4Addr::new(10, 200, 1, 1),
            Ipv4Addr::new(10, 200, 1, 2),
        ]),
        Reply::Refused("no user namespaces".into()),
    ] {
        assert_eq!(Reply::decode(&reply.encode()), Some(reply));
    }
    for role in [
        KeeperRole::Launch {
            socket: "netns-harness/0.1.0/0/run/42".into(),
            watch_pid: 4242,
        },
        KeeperRole::Keep {
            listener_fd: 3,
            watch_fd: 4,
        },
    ] {
        assert_eq!(KeeperRole::decode(&role.encode()), Some(role));
    }
    // Anything else is no message.
    assert_eq!(Request::decode(&[1, 5]), None);
    assert_eq!(Request::decode(&[0, 0]), None);
    assert_eq!(Reply::decode(&[9]), None);
    assert_eq!(KeeperRole::decode("zz"), None);
}
