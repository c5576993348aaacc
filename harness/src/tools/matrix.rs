//! Reachability matrices: who reaches whom, by ICMP and TCP ports, over
//! IPv4 or IPv6 (each endpoint is probed at the address it was given),
//! printed as a table and compared with what was expected.

use std::fmt;
use std::net::IpAddr;

use crate::common::error::Result;
use crate::network::lab::Lab;
use crate::process::container::Container;
use crate::tools::probe::{ProbeOptions, Prober};

/// What a matrix cell checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// An ICMP echo is answered.
    Icmp,
    /// A TCP SYN to this port is answered with SYN-ACK.
    Tcp(u16),
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Icmp => f.write_str("icmp"),
            Check::Tcp(port) => write!(f, "tcp/{port}"),
        }
    }
}

/// A place to probe from and to: a name, an address, and a prober in its
/// namespace.
#[derive(Clone, Debug)]
pub struct Endpoint {
    name: String,
    addr: IpAddr,
    prober: Prober,
}

impl Endpoint {
    /// An endpoint of one's own making, probed at `addr` (IPv4 or IPv6)
    /// and probing from `prober`'s namespace.
    ///
    /// ```no_run
    /// use std::net::Ipv6Addr;
    /// use netns_harness::matrix::Endpoint;
    /// use netns_harness::probe::Prober;
    /// let me = Endpoint::new("me", "fd00:99::2".parse::<Ipv6Addr>().unwrap(), Prober::here());
    /// ```
    pub fn new(name: impl Into<String>, addr: impl Into<IpAddr>, prober: Prober) -> Endpoint {
        Endpoint {
            name: name.into(),
            addr: addr.into(),
            prober,
        }
    }

    /// A container, probing from its namespace.
    pub fn container(container: &Container) -> Result<Endpoint> {
        Ok(Endpoint::new(
            container.name(),
            container.addr(),
            Prober::in_netns(container.netns())?,
        ))
    }

    /// The lab's gateway (the bridge), probing from the lab namespace.
    pub fn gateway(lab: &Lab) -> Result<Endpoint> {
        Ok(Endpoint::new(
            "gateway",
            lab.gateway(),
            Prober::in_netns(lab.lab_netns())?,
        ))
    }

    /// The outside host.
    pub fn outside(lab: &Lab) -> Result<Endpoint> {
        Ok(Endpoint::new(
            "outside",
            lab.outside_addr(),
            Prober::in_netns(lab.outside_netns())?,
        ))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One probe's result: whether it reached, and the outcome in words.
#[derive(Clone, Debug, Default)]
struct Cell {
    reached: bool,
    outcome: String,
}

/// Where a cell is: `(from, to, check)` indices.
type Position = (usize, usize, usize);

/// Who reaches whom: one cell per ordered pair of distinct endpoints and
/// check.
#[derive(Clone, Debug)]
pub struct Matrix {
    names: Vec<String>,
    checks: Vec<Check>,
    /// `cells[from][to][check]`.
    cells: Vec<Vec<Vec<Cell>>>,
}

impl Matrix {
    /// Probes every ordered pair of `endpoints` with every check, all at
    /// once (an unanswered probe costs its timeout once, not per cell).
    pub fn probe(
        endpoints: &[Endpoint],
        checks: &[Check],
        options: ProbeOptions,
    ) -> Result<Matrix> {
        let n = endpoints.len();
        let results: Vec<Result<(Position, Cell)>> = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, from) in endpoints.iter().enumerate() {
                for (j, to) in endpoints.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    for (k, check) in checks.iter().enumerate() {
                        handles.push(scope.spawn(move || {
                            let (reached, outcome) = match *check {
                                Check::Icmp => {
                                    let o = from.prober.icmp(to.addr, options)?;
                                    (o.is_reachable(), o.to_string())
                                }
                                Check::Tcp(port) => {
                                    let o = from.prober.tcp(to.addr, port, options)?;
                                    (o.is_open(), o.to_string())
                                }
                            };
                            Ok(((i, j, k), Cell { reached, outcome }))
                        }));
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut cells = vec![vec![vec![Cell::default(); checks.len()]; n]; n];
        for result in results {
            let ((i, j, k), cell) = result?;
            cells[i][j][k] = cell;
        }
        Ok(Matrix {
            names: endpoints.iter().map(|e| e.name.clone()).collect(),
            checks: checks.to_vec(),
            cells,
        })
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Whether `from` reached `to` by `check`; `None` for an unknown name or
    /// check, or `from == to`.
    pub fn reaches(&self, from: &str, to: &str, check: Check) -> Option<bool> {
        let (i, j) = (self.index(from)?, self.index(to)?);
        let k = self.checks.iter().position(|c| *c == check)?;
        (i != j).then(|| self.cells[i][j][k].reached)
    }

    /// The cells that differ from `expected(from, to, check)`, one line
    /// each: what was expected and what happened.
    pub fn differences(&self, expected: impl Fn(&str, &str, Check) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, from) in self.names.iter().enumerate() {
            for (j, to) in self.names.iter().enumerate() {
                if i == j {
                    continue;
                }
                for (k, check) in self.checks.iter().enumerate() {
                    let cell = &self.cells[i][j][k];
                    let want = expected(from, to, *check);
                    if cell.reached != want {
                        let want = if want { "reachable" } else { "unreachable" };
                        out.push(format!(
                            "{from} -> {to} {check}: expected {want}, got {}",
                            cell.outcome
                        ));
                    }
                }
            }
        }
        out
    }

    /// Panics, showing the table and only the differing cells, unless every
    /// cell is as `expected(from, to, check)` says.
    #[track_caller]
    pub fn assert_expected(&self, expected: impl Fn(&str, &str, Check) -> bool) {
        let differences = self.differences(expected);
        assert!(
            differences.is_empty(),
            "the reachability matrix differs from the expected one in {} cells:\n  {}\n\n{self}",
            differences.len(),
            differences.join("\n  ")
        );
    }
}

impl fmt::Display for Matrix {
    /// A table: a row per source, a column per destination, one mark per
    /// check in each cell (`Y` reached, `.` not).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks: Vec<String> = self.checks.iter().map(ToString::to_string).collect();
        let width = self
            .names
            .iter()
            .map(String::len)
            .chain([self.checks.len() * 2, 4])
            .max()
            .unwrap_or(4);
        writeln!(
            f,
            "reachability ({}), rows reach columns:",
            checks.join(" ")
        )?;
        write!(f, "{:width$}", "")?;
        for name in &self.names {
            write!(f, "  {name:>width$}")?;
        }
        writeln!(f)?;
        for (i, from) in self.names.iter().enumerate() {
            write!(f, "{from:width$}")?;
            for j in 0..self.names.len() {
                let cell: String = if i == j {
                    "-".to_owned()
                } else {
                    let marks: Vec<&str> = self.cells[i][j]
                        .iter()
                        .map(|c| if c.reached { "Y" } else { "." })
                        .collect();
                    marks.join(" ")
                };
                write!(f, "  {cell:>width$}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
