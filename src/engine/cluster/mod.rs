//! A cluster's connections: timely's own multi-process communication, with
//! plantflow's handshake in front of it.
//!
//! Process `i` listens on its address and connects to every process before
//! it (timely's convention), retrying until [`CONNECT_TIMEOUT`]. Each
//! connection opens with a greeting both ways: a magic, the process index,
//! the number of processes, the dataflow file's fingerprint, the workers per
//! process and a hash of the tag ids (the assets file's order). A process
//! started with another dataflow, `--processes`, `--workers` or assets file
//! is refused by name instead of exchanging data it would misread. The sockets then go to
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

mod control;
use control::{heartbeat, peer_timeout, HEARTBEAT_LOST};
pub use control::{linked, on_control, on_stop, send_control, tell_stop, Control, Told};

/// How long a process waits for the others to start and answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

const MAGIC: [u8; 8] = *b"plntflw3";

/// The greeting's size: the magic and eight words.
const GREETING: usize = 72;

/// A greeting's flag: process 0 has nothing to do (see [`NOTHING_TO_DO`]).
const DONE: u64 = 1;
/// A greeting's flag: the connection carries heartbeats, not timely's data.
const CONTROL: u64 = 2;

/// What a process of a cluster hears when process 0 found its lake already
/// holding this whole (deterministic) run: there is nothing to do.
pub const NOTHING_TO_DO: &str = "process 0: the lake already holds this whole run, nothing to do";

/// Every process's address, for naming a lost one.
static ADDRESSES: OnceLock<Vec<String>> = OnceLock::new();

/// What opens a connection, both ways.
#[derive(Clone, Debug, PartialEq)]
struct Greeting {
    process: u64,
    processes: u64,
    fingerprint: u64,
    workers: u64,
    tags: u64,
    /// [`DONE`] and [`CONTROL`].
    flags: u64,
    /// Process 0's: where every process's input log starts.
    start: Start,
}

/// Where every process's input log starts, as process 0 says in its
/// greeting (it read its lake's last commit): the others follow it, so
/// that every process's input goes on from the same time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// The cluster keeps no input logs.
    #[default]
    Unlogged,
    /// New logs: any a process has are from another run, and go.
    Fresh,
    /// Every log from its beginning (no checkpoint named yet).
    Whole,
    /// From the checkpoint at this time, which every process wrote.
    At(u64),
}

impl Start {
    fn words(self) -> (u64, u64) {
        match self {
            Start::Unlogged => (0, 0),
            Start::Fresh => (1, 0),
            Start::Whole => (2, 0),
            Start::At(at) => (3, at),
        }
    }

    fn of(kind: u64, at: u64) -> Start {
        match kind {
            1 => Start::Fresh,
            2 => Start::Whole,
            3 => Start::At(at),
            _ => Start::Unlogged,
        }
    }
}

/// This process's connections to the others, made before its engine
/// starts (see [`join`]).
pub struct Joined {
    pub cluster: Cluster,
    sockets: Vec<Option<TcpStream>>,
    /// Where process 0 says every process's input log starts.
    pub start: Start,
}

/// What every process of a cluster must share, besides its size.
#[derive(Clone, Copy, Debug)]
pub struct Shared {
    /// The dataflow file's fingerprint.
    pub fingerprint: u64,
    /// A hash of the tag registry's names in id order.
    pub tags: u64,
}

/// The [`Shared::tags`] hash of a registry.
pub fn tags_hash(tags: &crate::ingest::TagRegistry) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for name in tags.view().keys() {
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    h.digest()
}

impl Greeting {
    /// This process's greeting (and every process's address, for naming a
    /// lost one).
    fn mine(c: &Cluster, workers: usize, shared: Shared, (flags, start): (u64, Start)) -> Greeting {
        let _ = ADDRESSES.set(c.addresses.clone());
        Greeting {
            process: c.process as u64,
            processes: c.processes as u64,
            fingerprint: shared.fingerprint,
            workers: workers as u64,
            tags: shared.tags,
            flags,
            start,
        }
    }

    fn write(&self, s: &mut TcpStream) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(GREETING);
        b.extend_from_slice(&MAGIC);
        for v in [
            self.process,
            self.processes,
            self.fingerprint,
            self.workers,
            self.tags,
            self.flags,
            self.start.words().0,
            self.start.words().1,
        ] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        s.write_all(&b)
    }

    fn read(s: &mut TcpStream) -> Result<Greeting, String> {
        let mut b = [0u8; GREETING];
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
            workers: word(3),
            tags: word(4),
            flags: word(5),
            start: Start::of(word(6), word(7)),
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
        if self.workers != mine.workers {
            return Some(format!(
                "process {} has --workers {} (this one {}): every process needs the same",
                self.process, self.workers, mine.workers
            ));
        }
        if self.tags != mine.tags {
            return Some(format!(
                "process {} has other tags (its assets file differs): tag ids must be the same everywhere",
                self.process
            ));
        }
        None
    }
}

/// Connects to every other process of `c` (waiting for them, up to
/// [`CONNECT_TIMEOUT`]) and starts the heartbeats: this process's place in
/// the cluster, with where process 0 says the input logs start (`start`
/// is this process's own: process 0's goes to the others). The engine
/// hands the connections to timely ([`execute`]).
pub fn join(c: &Cluster, workers: usize, shared: Shared, start: Start) -> Result<Joined, String> {
    let mine = Greeting::mine(c, workers, shared, (0, start));
    let (sockets, control, zero) = connect(c, &mine, CONNECT_TIMEOUT)?;
    heartbeat(c.process, control, peer_timeout());
    Ok(Joined {
        cluster: c.clone(),
        sockets,
        start: zero.unwrap_or(start),
    })
}

/// Hands a cluster's connections to timely: the allocators of this
/// process's `threads` workers.
fn allocators(
    joined: Joined,
    threads: usize,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn std::any::Any + Send>), String> {
    let Joined {
        cluster: c,
        sockets,
        ..
    } = joined;
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

/// The connections of one process: for timely, one socket per other
/// process in process order (`None` at this one); for heartbeats, process
/// 0's to every other, or another's to process 0; and process 0's
/// [`Start`] (another process's, as it said).
type Links = (
    Vec<Option<TcpStream>>,
    Vec<(usize, TcpStream)>,
    Option<Start>,
);

/// Connects to every other process (see [`Links`]).
fn connect(c: &Cluster, mine: &Greeting, timeout: Duration) -> Result<Links, String> {
    let me = c.process;
    let listener = TcpListener::bind(&c.addresses[me])
        .map_err(|e| format!("process {me} cannot listen on {}: {e}", c.addresses[me]))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut sockets: Vec<Option<TcpStream>> = (0..c.processes).map(|_| None).collect();
    let mut control: Vec<Option<TcpStream>> = (0..c.processes).map(|_| None).collect();
    let mut told = Instant::now();
    let mut zero = None;
    // Connect to the processes before this one; accept the ones after it.
    // Process 0 with nothing to do has no run to watch: no heartbeats.
    let heartbeats = mine.flags & DONE == 0;
    let missing = |s: &[Option<TcpStream>], h: &[Option<TcpStream>]| {
        (0..c.processes)
            .filter(|p| *p != me && s[*p].is_none())
            .chain((heartbeats && me > 0 && h[0].is_none()).then_some(0))
            .chain((1..c.processes).filter(|p| heartbeats && me == 0 && h[*p].is_none()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    loop {
        let left = missing(&sockets, &control);
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
            // Process 0's heartbeat connection, once its data connection is made.
            let beat = sockets[p].is_some();
            let mut hello = mine.clone();
            if beat {
                hello.flags |= CONTROL;
            }
            if let Some(mut s) = dial(&c.addresses[p]) {
                match greet(&mut s, &hello, Some(p)) {
                    Ok((_, flags, _)) if flags & DONE != 0 => return Err(NOTHING_TO_DO.into()),
                    Ok(_) if beat => control[p] = Some(s),
                    Ok((q, _, start)) => {
                        if q == 0 {
                            zero = Some(start);
                        }
                        sockets[p] = Some(s)
                    }
                    Err(Greet::Refused(e)) => return Err(e),
                    // Not ready, or not a peer: try again.
                    Err(Greet::Stray(e)) => tracing::debug!("{e}"),
                }
            }
        }
        match listener.accept() {
            Ok((mut s, from)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                match greet(&mut s, mine, None) {
                    Ok((p, flags, _))
                        if flags & CONTROL != 0 && me == 0 && p > 0 && p < c.processes =>
                    {
                        control[p] = Some(s)
                    }
                    Ok((p, flags, _))
                        if flags & CONTROL == 0
                            && p > me
                            && p < c.processes
                            && sockets[p].is_none() =>
                    {
                        sockets[p] = Some(s)
                    }
                    Ok((p, _, _)) => tracing::warn!(
                        "process {me}: an unexpected connection as process {p} from {from}, dropped"
                    ),
                    Err(Greet::Refused(e)) => return Err(e),
                    // A port scanner or a health check: not a peer.
                    Err(Greet::Stray(e)) => {
                        tracing::warn!("process {me}: a connection from {from} dropped: {e}")
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => return Err(format!("process {me}: accepting a connection: {e}")),
        }
    }
    for s in sockets.iter().chain(&control).flatten() {
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        watch_link(s).map_err(|e| format!("process {me}: a connection's keepalive: {e}"))?;
    }
    tracing::info!(
        "process {me}: the cluster of {} processes is connected",
        c.processes
    );
    let control = control
        .into_iter()
        .enumerate()
        .filter_map(|(p, s)| Some((p, s?)))
        .collect();
    Ok((sockets, control, zero))
}

/// A host that vanishes without closing its connections (power lost, a
/// cable cut) breaks them after all: keepalive probes after 10 s idle (3, 2 s
/// apart), and data unacknowledged for 60 s ends the connection (Linux).
/// Timely's thread then panics as for a closed one (see [`peer_lost`]).
fn watch_link(s: &TcpStream) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(s);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(2))
        .with_retries(3);
    sock.set_tcp_keepalive(&probes)?;
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(Some(Duration::from_secs(60)))?;
    Ok(())
}

/// A connection to `address` within a second (a host that is down does
/// not hold the loop for the system's connect timeout).
fn dial(address: &str) -> Option<TcpStream> {
    use std::net::ToSocketAddrs;
    let addrs = address.to_socket_addrs().ok()?;
    addrs
        .into_iter()
        .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok())
}

/// Why a greeting failed: a peer of another cluster (the run cannot go
/// on), or a connection that is no peer, or not yet one (try again).
enum Greet {
    Refused(String),
    Stray(String),
}

/// Greets a peer and checks its greeting; returns its process index, its
/// flags ([`DONE`] from process 0 only) and its [`Start`].
fn greet(
    s: &mut TcpStream,
    mine: &Greeting,
    expect: Option<usize>,
) -> Result<(usize, u64, Start), Greet> {
    let me = mine.process;
    let peer = s
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| mine.write(s))
        .map_err(|e| e.to_string())
        .and_then(|()| Greeting::read(s));
    let peer = peer.map_err(|e| {
        let who = expect.map_or("a connection".to_string(), |p| format!("process {p}"));
        Greet::Stray(format!("process {me}: {who}: {e}"))
    })?;
    if let Some(why) = peer.mismatch(mine) {
        return Err(Greet::Refused(format!(
            "process {me} refuses the cluster: {why}"
        )));
    }
    if expect.is_some_and(|p| p as u64 != peer.process) {
        return Err(Greet::Refused(format!(
            "process {me}: {} answered as process {}: check the hostfile's order",
            expect.map_or(String::new(), |p| format!("the address of process {p}")),
            peer.process
        )));
    }
    s.set_read_timeout(None)
        .map_err(|e| Greet::Stray(e.to_string()))?;
    let done = if peer.process == 0 { DONE } else { 0 };
    Ok((
        peer.process as usize,
        peer.flags & (done | CONTROL),
        peer.start,
    ))
}

/// Process 0 with nothing to do tells the others so: it greets each as it
/// connects, saying so, and returns once all have heard (or after
/// [`CONNECT_TIMEOUT`]: a process that never came has nothing to hear).
pub fn dismiss(c: &Cluster, workers: usize, shared: Shared) -> Result<(), String> {
    let mine = Greeting::mine(c, workers, shared, (DONE, Start::Unlogged));
    connect(c, &mine, CONNECT_TIMEOUT).map(drop)
}

/// Where this process's `workers` are among a cluster's: the first one's
/// index (they are `first..first + workers`), whether there is a cluster,
/// and whether this process writes (process 0: the others' workers send
/// nothing to a writer, since every row goes to worker 0).
pub(super) fn place(cluster: Option<&Cluster>, workers: usize) -> (usize, bool, bool) {
    match cluster {
        Some(c) => (c.process * workers, true, c.writes()),
        None => (0, false, true),
    }
}

/// The process a panic on this thread says was lost (timely's send and
/// receive threads are named `timely:send-N` / `timely:recv-N` and panic
/// with "timely communication error" when a peer's socket closes), with its
/// address.
pub fn peer_lost(thread: &str, message: &str) -> Option<(usize, String)> {
    let p: usize = if thread.starts_with("plantflow:heartbeat-") {
        let n = message.strip_prefix(HEARTBEAT_LOST)?.split(':').next()?;
        n.parse().ok()?
    } else {
        let n = thread
            .strip_prefix("timely:recv-")
            .or_else(|| thread.strip_prefix("timely:send-"))?;
        if !message.contains("timely communication error") {
            return None;
        }
        n.parse().ok()?
    };
    let addr = ADDRESSES
        .get()
        .and_then(|a| a.get(p).cloned())
        .unwrap_or_default();
    Some((p, addr))
}

/// Starts the workers: this process's alone, or its part of a cluster.
pub(super) fn execute<F>(
    cluster: Option<Joined>,
    workers: usize,
    body: F,
) -> Result<timely::communication::WorkerGuards<()>, String>
where
    F: Fn(&mut timely::worker::Worker) + Send + Sync + 'static,
{
    match cluster {
        Some(joined) => {
            let (builders, others) = allocators(joined, workers)?;
            timely::execute::execute_from(builders, others, timely::WorkerConfig::default(), body)
        }
        None => timely::execute(super::timely_config(workers), body),
    }
    .map_err(|e| format!("cannot start workers: {e}"))
}

/// Hands the rows a cluster's other processes sent for the lake to worker
/// 0's writer (counted as queued dead letters there, as the writer expects).
/// In a cluster, worker 0 (`local` 0 of `workers` of process 0) reports
/// the stream's frontier as progress: the writer commits a time only once
/// every such row before it has come, since they travel apart from the
/// outputs.
pub(super) fn side_to_writer(
    side: Stream<'_, u64, Vec<Side>>,
    tx: Option<super::Outlet>,
    stats: Arc<crate::stats::Stats>,
    (local, workers, in_cluster): (usize, usize, bool),
) {
    let of = super::outlets::progress_sources(workers, in_cluster);
    let mut progress =
        (in_cluster && local == 0).then(|| super::progress_marker(tx.clone(), 2 * workers, of));
    let mut reported = 0;
    side.sink(
        Exchange::new(|_: &Side| 0u64),
        "side",
        move |(input, frontier)| {
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
            if let Some(p) = progress.as_mut() {
                super::output::report_progress(frontier, &mut reported, p);
            }
        },
    );
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
        let run = |fingerprints: [u64; 3], done: u64| {
            let handles: Vec<_> = (0..3)
                .map(|i| {
                    let c = Cluster {
                        processes: 3,
                        process: i,
                        addresses: addresses.clone(),
                    };
                    std::thread::spawn(move || {
                        connect(
                            &c,
                            &Greeting {
                                process: i as u64,
                                processes: 3,
                                fingerprint: fingerprints[i],
                                workers: 1,
                                tags: 9,
                                flags: if i == 0 { done } else { 0 },
                                start: Start::Unlogged,
                            },
                            Duration::from_secs(3),
                        )
                        .map(|(s, h, _)| {
                            // Every connection is watched for a vanished host.
                            let kept = |x: &&TcpStream| {
                                socket2::SockRef::from(*x).keepalive().unwrap_or(false)
                            };
                            // Heartbeats go between process 0 and each other.
                            let beats: Vec<usize> = h.iter().map(|(p, _)| *p).collect();
                            let want = if i == 0 { vec![1, 2] } else { vec![0] };
                            assert!(beats == want || done == DONE, "{i}: {beats:?}");
                            s.iter().flatten().filter(kept).count()
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        };
        // A stray connection (a port scanner, a health check) is dropped.
        let first = addresses[0].clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                if let Ok(mut s) = TcpStream::connect(&first) {
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        assert_eq!(run([7, 7, 7], 0), vec![Ok(2), Ok(2), Ok(2)]);
        // Process 0 with nothing to do sends the others home.
        let r = run([7, 7, 7], DONE);
        assert_eq!(r[0], Ok(2), "{r:?}");
        assert!(
            r[1..]
                .iter()
                .all(|x| x.as_ref().is_err_and(|e| e == NOTHING_TO_DO)),
            "{r:?}"
        );
        let r = run([7, 7, 8], 0);
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
        let silent =
            format!("{HEARTBEAT_LOST}3: no heartbeat for 20.0 s (stopped, hung or cut off)");
        assert_eq!(
            peer_lost("plantflow:heartbeat-0", &silent).map(|p| p.0),
            Some(3)
        );
    }
}
