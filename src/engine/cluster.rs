//! A cluster's connections: timely's own multi-process communication, with
//! plantflow's handshake in front of it.
//!
//! Process `i` listens on its address and connects to every process before
//! it (timely's convention), retrying until [`CONNECT_TIMEOUT`]. Each
//! connection opens with a greeting (a magic, the process index, the number
//! of processes and the dataflow file's fingerprint) both ways, so a process
//! started with another dataflow or another `--processes` is refused by
//! name instead of exchanging data it would misread. The sockets then go to
//! timely's send and receive threads.
//!
//! A process that dies closes its sockets; timely's receive thread then
//! panics with "timely communication error". [`peer_lost`] recognises that
//! panic (from the panic hook), so the run can stop naming the process.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};

use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator as _;
use timely::dataflow::Stream;

use crate::config::cluster::Cluster;
use crate::model::SideRows;

use super::Side;

/// How long a process waits for the others to start and answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

const MAGIC: [u8; 8] = *b"plntflw1";

/// Every process's address, for naming a lost one.
static ADDRESSES: OnceLock<Vec<String>> = OnceLock::new();

/// What opens a connection, both ways.
#[derive(Debug, PartialEq)]
struct Greeting {
    process: u64,
    processes: u64,
    fingerprint: u64,
}

impl Greeting {
    fn write(&self, s: &mut TcpStream) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&MAGIC);
        for v in [self.process, self.processes, self.fingerprint] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        s.write_all(&b)
    }

    fn read(s: &mut TcpStream) -> Result<Greeting, String> {
        let mut b = [0u8; 32];
        s.read_exact(&mut b)
            .map_err(|e| format!("no greeting: {e}"))?;
        if b[..8] != MAGIC {
            return Err("not a plantflow process of this version".into());
        }
        let word = |i: usize| u64::from_be_bytes(b[8 + 8 * i..16 + 8 * i].try_into().unwrap());
        Ok(Greeting {
            process: word(0),
            processes: word(1),
            fingerprint: word(2),
        })
    }

    /// Why a peer's greeting does not belong to this cluster.
    fn mismatch(&self, mine: &Greeting) -> Option<String> {
        if self.processes != mine.processes {
            return Some(format!(
                "process {} was started with --processes {} (this one with {})",
                self.process, self.processes, mine.processes
            ));
        }
        if self.fingerprint != mine.fingerprint {
            return Some(format!(
                "process {} runs another dataflow file (or another version of it)",
                self.process
            ));
        }
        None
    }
}

/// Connects to every other process of `c` and hands the sockets to
/// timely: the allocators of this process's `threads` workers.
pub(super) fn allocators(
    c: &Cluster,
    threads: usize,
    fingerprint: u64,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>), String> {
    let _ = ADDRESSES.set(c.addresses.clone());
    let sockets = connect(c, fingerprint, CONNECT_TIMEOUT)?;
    let hooks = timely::communication::Hooks::default();
    let local =
        ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        initialize_networking_from_sockets(local, sockets, c.process, threads, hooks)
            .map_err(|e| format!("cannot start the cluster's connections: {e}"))?;
    Ok((
        builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        Box::new(guard),
    ))
}

/// One socket per other process, in process order (`None` at this one).
fn connect(
    c: &Cluster,
    fingerprint: u64,
    timeout: Duration,
) -> Result<Vec<Option<TcpStream>>, String> {
    let me = c.process;
    let mine = Greeting {
        process: me as u64,
        processes: c.processes as u64,
        fingerprint,
    };
    let listener = TcpListener::bind(&c.addresses[me])
        .map_err(|e| format!("process {me} cannot listen on {}: {e}", c.addresses[me]))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut sockets: Vec<Option<TcpStream>> = (0..c.processes).map(|_| None).collect();
    let mut told = Instant::now();
    // Connect to the processes before this one; accept the ones after it.
    let missing = |s: &[Option<TcpStream>]| {
        (0..c.processes)
            .filter(|p| *p != me && s[*p].is_none())
            .collect::<Vec<_>>()
    };
    loop {
        let left = missing(&sockets);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = left
                .iter()
                .map(|p| format!("process {p} ({})", c.addresses[*p]))
                .collect();
            return Err(format!(
                "the cluster did not form within {} s: no answer from {}",
                timeout.as_secs(),
                names.join(", ")
            ));
        }
        if told.elapsed() > Duration::from_secs(5) {
            told = Instant::now();
            tracing::info!("process {me}: waiting for processes {left:?} to connect");
        }
        for p in left.iter().copied().filter(|p| *p < me) {
            if let Ok(mut s) = TcpStream::connect(&c.addresses[p]) {
                greet(&mut s, &mine, Some(p))?;
                sockets[p] = Some(s);
            }
        }
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                let p = greet(&mut s, &mine, None)?;
                if p <= me || p >= c.processes || sockets[p].is_some() {
                    return Err(format!(
                        "process {me}: an unexpected connection from process {p}"
                    ));
                }
                sockets[p] = Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(format!("process {me}: accepting a connection: {e}")),
        }
    }
    for s in sockets.iter().flatten() {
        s.set_nodelay(true).map_err(|e| e.to_string())?;
    }
    tracing::info!(
        "process {me}: the cluster of {} processes is connected",
        c.processes
    );
    Ok(sockets)
}

/// Greets a peer and checks its greeting; returns its process index.
fn greet(s: &mut TcpStream, mine: &Greeting, expect: Option<usize>) -> Result<usize, String> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let peer = mine
        .write(s)
        .map_err(|e| e.to_string())
        .and_then(|()| Greeting::read(s));
    let peer = peer.map_err(|e| {
        let who = expect.map_or("a connecting peer".to_string(), |p| format!("process {p}"));
        format!("process {}: {who}: {e}", mine.process)
    })?;
    if let Some(why) = peer.mismatch(mine) {
        return Err(format!(
            "process {} refuses the cluster: {why}",
            mine.process
        ));
    }
    if expect.is_some_and(|p| p as u64 != peer.process) {
        return Err(format!(
            "process {}: {} answered as process {}: check the hostfile's order",
            mine.process,
            expect.map_or(String::new(), |p| format!("the address of process {p}")),
            peer.process
        ));
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    Ok(peer.process as usize)
}

/// The process a panic on this thread says was lost (timely's send and
/// receive threads are named `timely:send-N` / `timely:recv-N` and panic
/// with "timely communication error" when a peer's socket closes), with its
/// address.
pub fn peer_lost(thread: &str, message: &str) -> Option<(usize, String)> {
    let n = thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))?;
    if !message.contains("timely communication error") {
        return None;
    }
    let p: usize = n.parse().ok()?;
    let addr = ADDRESSES
        .get()
        .and_then(|a| a.get(p).cloned())
        .unwrap_or_default();
    Some((p, addr))
}

/// Starts the workers: this process's alone, or its part of a cluster.
pub(super) fn execute<F>(
    cluster: Option<&(Cluster, u64)>,
    workers: usize,
    body: F,
) -> Result<timely::communication::WorkerGuards<()>, String>
where
    F: Fn(&mut timely::worker::Worker) + Send + Sync + 'static,
{
    match cluster {
        Some((c, fingerprint)) => {
            let (builders, others) = allocators(c, workers, *fingerprint)?;
            timely::execute::execute_from(builders, others, timely::WorkerConfig::default(), body)
        }
        None => timely::execute(super::timely_config(workers), body),
    }
    .map_err(|e| format!("cannot start workers: {e}"))
}

/// Hands the rows a cluster's other processes sent for the lake to worker
/// 0's writer (counted as queued dead letters there, as the writer expects).
pub(super) fn side_to_writer(
    side: Stream<'_, u64, Vec<Side>>,
    tx: Option<super::Outlet>,
    stats: Arc<crate::stats::Stats>,
) {
    side.sink(Exchange::new(|_: &Side| 0u64), "side", move |(input, _)| {
        input.for_each_stamp(|_, data| {
            for (time, rows) in data.flat_map(|b| b.drain(..)) {
                if let SideRows::DeadLetters(d) = &rows {
                    let queued = &stats.dead_letters_queued;
                    queued.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(tx) = &tx {
                    tx.send(SideRows::stamped(time, rows));
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three processes on loopback greet each other; one started with
    /// another dataflow is refused by name.
    #[test]
    fn processes_greet_and_refuse_a_stranger() {
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .collect();
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let run = |fingerprints: [u64; 3]| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let c = Cluster {
                        processes: 3,
                        process: i,
                        addresses: addresses.clone(),
                    };
                    std::thread::spawn(move || {
                        connect(&c, fingerprints[i], Duration::from_secs(3))
                            .map(|s| s.iter().filter(|x| x.is_some()).count())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run([7, 7, 7]), vec![Ok(2), Ok(2), Ok(2)]);
        let r = run([7, 7, 8]);
        assert!(
            r.iter().any(|x| x
                .as_ref()
                .is_err_and(|e| e.contains("process 2 runs another dataflow"))),
            "{r:?}"
        );
    }

    #[test]
    fn a_lost_peer_is_named_from_timely_s_panic() {
        let m = "timely communication error: reading data: socket closed";
        assert_eq!(peer_lost("timely:recv-2", m).map(|p| p.0), Some(2));
        assert_eq!(peer_lost("timely:send-0", m).map(|p| p.0), Some(0));
        assert_eq!(peer_lost("plantflow-io", m), None);
        assert_eq!(peer_lost("timely:recv-1", "index out of bounds"), None);
    }
}
