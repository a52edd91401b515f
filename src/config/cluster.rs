//! A cluster of processes running one dataflow together (`plantflow run
//! --processes N --process I --hostfile FILE`): who they are and where.
//!
//! The hostfile names one `host:port` per process, in process order (blank
//! lines and `#` comments are skipped). Without one, process `i` listens on
//! `127.0.0.1:2101+i` (timely's own default), for trying it on one machine.

use std::path::{Path, PathBuf};

/// The first port of a cluster without a hostfile (timely's default).
pub const FIRST_PORT: u16 = 2101;

/// This process's place in a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub processes: usize,
    pub process: usize,
    /// Every process's `host:port`, in process order.
    pub addresses: Vec<String>,
}

/// A cluster that cannot be set up as given: what is wrong, and where
/// (the hostfile's line, when it is in the hostfile).
#[derive(Debug)]
pub struct ClusterError {
    pub file: Option<(PathBuf, usize)>,
    pub message: String,
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some((p, line)) => write!(f, "{}:{line}: {}", p.display(), self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl Cluster {
    /// Process `process` of `processes`, at the hostfile's addresses (or
    /// loopback ports from [`FIRST_PORT`]).
    pub fn new(
        processes: usize,
        process: usize,
        hostfile: Option<&Path>,
    ) -> Result<Cluster, ClusterError> {
        let plain = |message: String| ClusterError {
            file: None,
            message,
        };
        if processes == 0 {
            return Err(plain("--processes must be 1 or more".into()));
        }
        if process >= processes {
            return Err(plain(format!(
                "--process {process} is not one of 0..{processes} (--processes {processes})"
            )));
        }
        let addresses = match hostfile {
            Some(p) => read_hostfile(p, processes)?,
            None => (0..processes)
                .map(|i| format!("127.0.0.1:{}", FIRST_PORT as usize + i))
                .collect(),
        };
        Ok(Cluster {
            processes,
            process,
            addresses,
        })
    }

    /// Whether this process runs the source at `index` of a dataflow (a
    /// source that cannot be shared runs on one process: its index modulo
    /// the number of processes).
    pub fn runs_source(&self, index: usize) -> bool {
        index % self.processes == self.process
    }

    /// Process 0 writes the lake, serves the operator surface and publishes.
    pub fn writes(&self) -> bool {
        self.process == 0
    }
}

fn read_hostfile(path: &Path, processes: usize) -> Result<Vec<String>, ClusterError> {
    let at = |line: usize, message: String| ClusterError {
        file: Some((path.to_path_buf(), line)),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| at(0, format!("cannot read: {e}")))?;
    let mut addresses = Vec::new();
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        last = i + 1;
        let port = line
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(p))) if !host.is_empty() && p > 0 => addresses.push(line.to_string()),
            _ => {
                return Err(at(
                    i + 1,
                    format!("`{line}` is not host:port (one process per line, in process order)"),
                ))
            }
        }
    }
    if addresses.len() != processes {
        return Err(at(
            last,
            format!(
                "names {} processes, but --processes is {processes}: one host:port per process",
                addresses.len()
            ),
        ));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostfile_names_every_process_in_order() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("hosts");
        std::fs::write(
            &f,
            "# the plant's nodes\nnode-a:2101\n\nnode-b:2101 # spare\n",
        )
        .unwrap();
        let c = Cluster::new(2, 1, Some(&f)).unwrap();
        assert_eq!(c.addresses, ["node-a:2101", "node-b:2101"]);
        assert!(c.runs_source(1) && c.runs_source(3) && !c.runs_source(0));
        let e = Cluster::new(3, 0, Some(&f)).unwrap_err().to_string();
        assert!(
            e.ends_with(":4: names 2 processes, but --processes is 3: one host:port per process"),
            "{e}"
        );
        std::fs::write(&f, "node-a:2101\nnode-b\n").unwrap();
        let e = Cluster::new(2, 0, Some(&f)).unwrap_err().to_string();
        assert!(e.contains(":2: `node-b` is not host:port"), "{e}");
        assert!(Cluster::new(2, 2, None).is_err());
        let c = Cluster::new(3, 2, None).unwrap();
        assert_eq!(c.addresses[2], "127.0.0.1:2103");
    }
}
