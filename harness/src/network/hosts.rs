//! The lab's names: which host of the lab each name stands for, as every
//! container's `/etc/hosts` lists them and [`Lab::resolve`] answers.
//!
//! A lab handle keeps its own table ([`Hosts`]): the gateway and the
//! outside host, the containers it started that are still alive, and, in
//! a test container, those its runner knew when the test started (they
//! come in its [`LabView`](crate::common::protocol::LabView)). A container
//! is written the table as it is when it starts; later changes do not
//! reach its file.

use std::net::IpAddr;
use std::sync::Arc;

use crate::common::error::{Error, Result};
use crate::common::nat::Uplink;
use crate::common::protocol::HostEntry;
use crate::common::subnet::Addressing;
use crate::network::lab::{Lab, LabInner, outside_addrs};

/// The gateway's name in every container's `/etc/hosts` and in
/// [`Lab::resolve`].
pub const GATEWAY_NAME: &str = "gateway";

/// The outside host's name in every container's `/etc/hosts` and in
/// [`Lab::resolve`].
pub const OUTSIDE_NAME: &str = "outside";

/// The names a lab handle knows.
#[derive(Debug)]
pub(crate) struct Hosts {
    /// The gateway and the outside host.
    fixed: [HostEntry; 2],
    /// Containers, oldest first, each with the number of its
    /// [`Registration`] (0: known from the runner, kept for good).
    containers: Vec<(u64, HostEntry)>,
    next: u64,
}

impl Hosts {
    /// The table of a lab addressed as `addressing`, knowing the
    /// containers `known` already.
    pub(crate) fn new(addressing: &Addressing, uplink: &Uplink, known: Vec<HostEntry>) -> Self {
        let entry = |addrs, name: &str| HostEntry {
            addrs,
            name: Some(name.to_owned()),
            aliases: Vec::new(),
        };
        let gateway = addressing.addrs(addressing.gateway());
        Self {
            fixed: [
                entry(gateway, GATEWAY_NAME),
                entry(outside_addrs(addressing, uplink), OUTSIDE_NAME),
            ],
            containers: known.into_iter().map(|entry| (0, entry)).collect(),
            next: 1,
        }
    }

    /// The containers known, oldest first (for a test container's view).
    pub(crate) fn containers(&self) -> Vec<HostEntry> {
        self.containers.iter().map(|(_, e)| e.clone()).collect()
    }

    fn entries(&self) -> impl Iterator<Item = &HostEntry> {
        self.fixed
            .iter()
            .chain(self.containers.iter().map(|(_, e)| e))
    }

    /// Who holds `name` already, if anyone.
    fn holder(&self, name: &str) -> Option<Holder> {
        let is = |n: &String| n.eq_ignore_ascii_case(name);
        self.entries().find_map(|entry| {
            if !entry.names().any(is) {
                return None;
            }
            Some(match &entry.name {
                Some(own) if self.fixed.contains(entry) => Holder::Fixed(own.clone()),
                Some(own) if is(own) => Holder::Name(own.clone()),
                Some(own) => Holder::Alias(format!("container {own:?}")),
                None => Holder::Alias(format!("a process on the {OUTSIDE_NAME} host")),
            })
        })
    }

    /// Checks that a container named `name` (none for a process on the
    /// outside host, which has its name) may have `aliases`, which no
    /// host may hold yet; several containers may share a name (tests of
    /// different modules do), but not with the gateway, the outside host
    /// or an alias.
    pub(crate) fn check(&self, name: Option<&str>, aliases: &[String]) -> Result<()> {
        let duplicate = |name: &str, holder: String| Error::DuplicateName {
            name: name.to_owned(),
            holder,
        };
        if let Some(name) = name
            && let Some(holder) = self.holder(name)
            && !matches!(holder, Holder::Name(_))
        {
            return Err(duplicate(name, holder.to_string()));
        }
        for (i, alias) in aliases.iter().enumerate() {
            if let Some(holder) = self.holder(alias) {
                return Err(duplicate(alias, holder.to_string()));
            }
            if name.is_some_and(|n| n.eq_ignore_ascii_case(alias)) {
                return Err(duplicate(alias, "this container's own name".into()));
            }
            if aliases[..i].iter().any(|a| a.eq_ignore_ascii_case(alias)) {
                return Err(duplicate(alias, "given twice as an alias".into()));
            }
        }
        Ok(())
    }

    /// Adds a container at `addrs` (see [`Hosts::check`]); its number and
    /// the lines of its `/etc/hosts`.
    fn add(
        &mut self,
        name: Option<&str>,
        aliases: &[String],
        addrs: Vec<IpAddr>,
    ) -> Result<(u64, Vec<u8>)> {
        self.check(name, aliases)?;
        let id = self.next;
        self.next += 1;
        self.containers.push((
            id,
            HostEntry {
                addrs,
                name: name.map(str::to_owned),
                aliases: aliases.to_vec(),
            },
        ));
        Ok((id, self.lines()))
    }

    /// The table as lines of a hosts file, after a comment saying what
    /// they are.
    fn lines(&self) -> Vec<u8> {
        let mut text =
            String::from("# the lab's hosts (netns-harness), as this container started\n");
        for entry in self.entries() {
            let names: Vec<&str> = entry.names().map(String::as_str).collect();
            if !names.is_empty() {
                for addr in &entry.addrs {
                    text.push_str(&format!("{addr}\t{}\n", names.join(" ")));
                }
            }
        }
        text.into_bytes()
    }

    /// The addresses of the hosts named `name` (several containers may
    /// share one), oldest first.
    fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        let addrs: Vec<IpAddr> = self
            .entries()
            .filter(|e| e.names().any(|n| n.eq_ignore_ascii_case(name)))
            .flat_map(|e| e.addrs.iter().copied())
            .collect();
        if addrs.is_empty() {
            let mut known: Vec<String> = Vec::new();
            for name in self.entries().flat_map(HostEntry::names) {
                if !known.contains(name) {
                    known.push(name.clone());
                }
            }
            return Err(Error::UnknownName {
                name: name.to_owned(),
                known,
            });
        }
        Ok(addrs)
    }

    fn remove(&mut self, id: u64) {
        self.containers.retain(|(i, _)| *i != id);
    }
}

/// Who holds a name: a host of the lab, by its first name.
enum Holder {
    /// The gateway or the outside host.
    Fixed(String),
    /// A container, as its name.
    Name(String),
    /// A container or a process on the outside host (as said), as one of
    /// its aliases.
    Alias(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Fixed(host) => write!(f, "the name of the lab's {host} host"),
            Holder::Name(container) => write!(f, "the name of container {container:?}"),
            Holder::Alias(owner) => write!(f, "an alias of {owner}"),
        }
    }
}

/// A container's names in its lab's table, taken out when dropped.
pub(crate) struct Registration {
    lab: Arc<LabInner>,
    id: u64,
}

impl Registration {
    /// Adds a container to `lab`'s table (see [`Hosts`]); the registration
    /// and the lines of its `/etc/hosts`.
    pub(crate) fn add(
        lab: &Arc<LabInner>,
        name: Option<&str>,
        aliases: &[String],
        addrs: Vec<IpAddr>,
    ) -> Result<(Self, Vec<u8>)> {
        let (id, lines) = lab.hosts().add(name, aliases, addrs)?;
        let registration = Self {
            lab: Arc::clone(lab),
            id,
        };
        Ok((registration, lines))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.lab.hosts().remove(self.id);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "names #{}", self.id)
    }
}

impl Lab {
    /// The addresses of the lab's host named `name`, as containers
    /// started now would find it in their `/etc/hosts`: [`GATEWAY_NAME`],
    /// [`OUTSIDE_NAME`], and the names and aliases
    /// ([`Spec::alias`](crate::Spec::alias)) of the containers this handle
    /// started that are alive (in a test body: also those alive when the
    /// test started). Names compare without regard to case; a name that
    /// several containers share gives all their addresses, oldest first.
    ///
    /// Fails with [`Error::UnknownName`], listing the names there are,
    /// when no host has that name.
    ///
    /// ```no_run
    /// use netns_harness::{Lab, Spec};
    /// let lab = Lab::shared()?;
    /// let db = lab.spawn(&Spec::command("sleep").arg("60").name("db").alias("db.lab"))?;
    /// assert_eq!(lab.resolve("db.lab")?, [db.addr()]);
    /// # Ok::<(), netns_harness::Error>(())
    /// ```
    pub fn resolve(&self, name: &str) -> Result<Vec<IpAddr>> {
        self.inner.hosts().resolve(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::subnet::Stack;
    use std::net::Ipv4Addr;

    fn addressing(stack: Stack) -> Addressing {
        Addressing {
            stack,
            subnet: "10.0.0.0/24".parse().unwrap(),
            subnet6: "fd00:7::/64".parse().unwrap(),
            nat66: false,
        }
    }

    fn hosts() -> Hosts {
        let known = vec![HostEntry {
            addrs: vec![Ipv4Addr::new(10, 0, 0, 9).into()],
            name: Some("runner_test".into()),
            aliases: Vec::new(),
        }];
        Hosts::new(
            &addressing(Stack::V4),
            &crate::network::lab::DEFAULT_UPLINK,
            known,
        )
    }

    #[test]
    fn a_dual_stack_host_has_a_line_for_each_family() {
        let lab = addressing(Stack::Dual);
        let mut hosts = Hosts::new(&lab, &crate::network::lab::DEFAULT_UPLINK, Vec::new());
        let web = Ipv4Addr::new(10, 0, 0, 2);
        let (_, lines) = hosts.add(Some("web"), &[], lab.addrs(web)).unwrap();
        let text = String::from_utf8(lines).unwrap();
        let expected = "10.0.0.1\tgateway\nfd00:7::1\tgateway\n198.18.0.2\toutside\n\
                        2001:db8::2\toutside\n10.0.0.2\tweb\nfd00:7::2\tweb\n";
        assert!(text.ends_with(expected), "{text}");
        assert_eq!(hosts.resolve("web").unwrap(), lab.addrs(web));
    }

    #[test]
    fn a_container_finds_the_fixed_hosts_those_before_it_and_itself() {
        let mut hosts = hosts();
        let web = Ipv4Addr::new(10, 0, 0, 2);
        let (first, _) = hosts
            .add(Some("web"), &["www.lab".into()], vec![web.into()])
            .unwrap();
        let (_, lines) = hosts
            .add(Some("db"), &[], vec![Ipv4Addr::new(10, 0, 0, 3).into()])
            .unwrap();
        let text = String::from_utf8(lines).unwrap();
        let expected = "10.0.0.1\tgateway\n198.18.0.2\toutside\n10.0.0.9\trunner_test\n\
                        10.0.0.2\tweb www.lab\n10.0.0.3\tdb\n";
        assert!(text.ends_with(expected), "{text}");
        assert!(text.starts_with('#'), "{text}");
        assert_eq!(hosts.resolve("WWW.lab").unwrap(), [IpAddr::V4(web)]);
        hosts.remove(first);
        let err = hosts.resolve("web").unwrap_err().to_string();
        assert_eq!(
            err,
            "no host of the lab is named \"web\"; the lab's names are: gateway, outside, \
             runner_test, db"
        );
    }

    #[test]
    fn containers_may_share_a_name_but_not_an_alias() {
        let mut hosts = hosts();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
        hosts
            .add(Some("case_1"), &["api".into()], vec![a.into()])
            .unwrap();
        hosts.add(Some("case_1"), &[], vec![b.into()]).unwrap();
        hosts
            .add(
                None,
                &["example.test".into()],
                vec![Ipv4Addr::new(198, 18, 0, 2).into()],
            )
            .unwrap();
        assert_eq!(
            hosts.resolve("case_1").unwrap(),
            [IpAddr::V4(a), IpAddr::V4(b)]
        );
        let mut err = |name: Option<&str>, aliases: &[&str]| {
            let aliases: Vec<String> = aliases.iter().map(|a| (*a).to_owned()).collect();
            let err = hosts.add(name, &aliases, vec![b.into()]).unwrap_err();
            assert!(matches!(err, Error::DuplicateName { .. }), "{err:?}");
            err.to_string()
        };
        assert!(
            err(Some("x"), &["API"])
                .contains("\"API\" is already an alias of container \"case_1\"")
        );
        assert!(err(Some("x"), &["case_1"]).contains("the name of container \"case_1\""));
        assert!(err(Some("gateway"), &[]).contains("the name of the lab's gateway host"));
        assert!(err(Some("api"), &[]).contains("an alias of container"));
        assert!(err(Some("x"), &["X"]).contains("this container's own name"));
        assert!(err(None, &["y", "y"]).contains("given twice"));
        let text = err(Some("example"), &["EXAMPLE.test"]);
        assert!(
            text.contains("an alias of a process on the outside host"),
            "{text}"
        );
        assert_eq!(
            hosts.containers().len(),
            4,
            "a refused container is not added"
        );
    }
}
