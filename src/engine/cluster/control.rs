//! A cluster's heartbeat connections: process 0 and every other process
//! say they are alive every [`BEAT`], and carry the cluster's stop and its
//! control messages (checkpoint rounds, see [`Control`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How often a process says it is alive on its heartbeat connections.
const BEAT: Duration = Duration::from_secs(1);

/// How long a peer may stay silent before it counts as lost, unless
/// `PLANTFLOW_PEER_TIMEOUT` (a duration: `20s`, `5s`; at least three beats)
/// says otherwise.
const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// The shortest peer timeout: three beats.
const MIN_PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// A stop was asked for (see [`tell_stop`]); process 0 passes it on once
/// its heartbeat connections are made, if it came before them.
static STOP_WANTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A heartbeat connection's bytes: alive, or (from process 0, followed by
/// the process index as 8 bytes) a process was lost.
const ALIVE: u8 = 1;
const LOST: u8 = 2;
/// Process 0 stops the cluster; another process asks it to.
const STOP: u8 = 3;
const ASK_STOP: u8 = 4;
/// A [`Control`] message: its kind, then two 8-byte words.
const PREPARE: u8 = 5;
const TIME: u8 = 6;
const CUT: u8 = 7;
const WRITTEN: u8 = 8;
const COMMITTED: u8 = 9;

/// This process's heartbeat connections, to write on (see [`tell_stop`]),
/// with this process's index.
static LINKS: std::sync::Mutex<Option<(usize, Beats)>> = std::sync::Mutex::new(None);

/// Heartbeat connections by the other process's index.
type Beats = Vec<(usize, TcpStream)>;

/// What a stop from the cluster does here (see [`on_stop`]).
type OnStop = Box<dyn Fn(usize) + Send + Sync>;
static ON_STOP: std::sync::Mutex<Option<OnStop>> = std::sync::Mutex::new(None);

/// What this process does when the cluster stops: `f(p)` with the process
/// that stopped it (process 0 hears `ASK_STOP` from process `p`; the others
/// hear `STOP` from process 0).
pub fn on_stop(f: OnStop) {
    if let Ok(mut s) = ON_STOP.lock() {
        *s = Some(f);
    }
}

/// Whom a stop was told to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Told {
    /// No cluster here (or its connections are gone): stop alone.
    Nobody,
    /// Process 0 told every other process to stop (and stops itself).
    Peers,
    /// Another process asked process 0 to stop the cluster: its own stop
    /// comes back from process 0.
    Zero,
}

/// A stop (a signal) for the whole cluster: process 0 tells the others to
/// stop; another process asks process 0 to, and stops when it hears back.
pub fn tell_stop() -> Told {
    STOP_WANTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let Ok(mut links) = LINKS.lock() else {
        return Told::Nobody;
    };
    let Some((me, links)) = links.as_mut() else {
        return Told::Nobody;
    };
    let byte = if *me == 0 { STOP } else { ASK_STOP };
    let mut sent = 0;
    for (_, s) in links.iter_mut() {
        if s.write_all(&[byte]).is_ok() {
            sent += 1;
        }
    }
    match (sent, *me) {
        (0, _) => Told::Nobody,
        (_, 0) => Told::Peers,
        _ => Told::Zero,
    }
}

fn stopped_by(p: usize) {
    if let Ok(f) = ON_STOP.lock() {
        if let Some(f) = f.as_ref() {
            f(p);
        }
    }
}

/// How a heartbeat watcher's panic begins (see [`peer_lost`]).
pub(super) const HEARTBEAT_LOST: &str = "cluster heartbeat: process ";

/// [`PEER_TIMEOUT`], or `PLANTFLOW_PEER_TIMEOUT`.
pub(super) fn peer_timeout() -> Duration {
    let set = std::env::var("PLANTFLOW_PEER_TIMEOUT").ok();
    match set.map(|v| crate::config::units::parse_duration_ms(&v)) {
        Some(Ok(ms)) if Duration::from_millis(ms) >= MIN_PEER_TIMEOUT => Duration::from_millis(ms),
        Some(Ok(_)) => {
            tracing::warn!(
                "PLANTFLOW_PEER_TIMEOUT is below three heartbeats, using {MIN_PEER_TIMEOUT:?}"
            );
            MIN_PEER_TIMEOUT
        }
        Some(Err(_)) => {
            tracing::warn!(
                "PLANTFLOW_PEER_TIMEOUT is not a duration (`20s`), using {PEER_TIMEOUT:?}"
            );
            PEER_TIMEOUT
        }
        None => PEER_TIMEOUT,
    }
}

/// Says this process is alive every [`BEAT`] on each heartbeat connection,
/// and watches each peer's: one silent for `timeout` (stopped with SIGSTOP,
/// hung, or behind a link that drops packets without closing) counts as
/// lost, as one whose connection broke. Process 0 first tells the others
/// which process it lost, so that every survivor names it. A heartbeat
/// connection that closes says nothing: the process's timely connections
/// break too, and they report it.
pub(super) fn heartbeat(me: usize, links: Vec<(usize, TcpStream)>, timeout: Duration) {
    // (a write to a peer that stopped reading gives up rather than hold
    // the others' heartbeats)
    let writers: Vec<(usize, TcpStream)> = links
        .iter()
        .filter_map(|(p, s)| {
            let w = s.try_clone().ok()?;
            w.set_write_timeout(Some(BEAT)).ok()?;
            Some((*p, w))
        })
        .collect();
    if let Ok(mut l) = LINKS.lock() {
        *l = Some((me, writers));
    }
    // A stop that came while the cluster was forming: process 0 passes it
    // on now (another process stopped alone then).
    if me == 0 && STOP_WANTED.load(std::sync::atomic::Ordering::SeqCst) {
        tell_stop();
    }
    let _ = std::thread::Builder::new()
        .name("plantflow-beat".into())
        .spawn(move || loop {
            std::thread::sleep(BEAT);
            if let Ok(mut l) = LINKS.lock() {
                for (_, s) in l.iter_mut().flat_map(|l| l.1.iter_mut()) {
                    let _ = s.write_all(&[ALIVE]);
                }
            }
        });
    for (q, mut s) in links {
        let _ = std::thread::Builder::new()
            .name(format!("plantflow:heartbeat-{q}"))
            .spawn(move || {
                let lost = watch_peer(&mut s, timeout, q);
                let Some(p) = lost else { return };
                let p = p.unwrap_or(q);
                // Process 0 tells the others first, so that they name the same process.
                if let (0, Ok(mut l)) = (me, LINKS.lock()) {
                    let mut said = vec![LOST];
                    said.extend_from_slice(&(p as u64).to_be_bytes());
                    for (_, s) in l.iter_mut().flat_map(|l| l.1.iter_mut()) {
                        let _ = s.write_all(&said);
                    }
                }
                panic!(
                    "{HEARTBEAT_LOST}{p}: no heartbeat for {:.1} s (stopped, hung or cut off)",
                    timeout.as_secs_f64()
                );
            });
    }
}

/// Reads a peer's heartbeats until it falls silent for `timeout`
/// (`Some(None)`), says another process was lost (`Some(Some(p))`), or
/// closes the connection (`None`).
fn watch_peer(s: &mut TcpStream, timeout: Duration, q: usize) -> Option<Option<usize>> {
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return None,
            Ok(_) if b[0] == LOST => {
                let mut p = [0u8; 8];
                s.read_exact(&mut p).ok()?;
                return Some(Some(u64::from_be_bytes(p) as usize));
            }
            Ok(_) if b[0] == STOP || b[0] == ASK_STOP => stopped_by(q),
            Ok(_) if (PREPARE..=COMMITTED).contains(&b[0]) => {
                let mut w = [0u8; 16];
                s.read_exact(&mut w).ok()?;
                let word = |i: usize| u64::from_be_bytes(w[8 * i..8 * i + 8].try_into().unwrap());
                if let Some(m) = Control::decode(b[0], word(0), word(1)) {
                    heard(q, m);
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Some(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// A checkpoint round's messages between process 0 and the others: process
/// 0 asks every process (itself too) to hold its time and say where it
/// is, picks a cut after every one, and each process checkpoints where its
/// time passes the cut. The lake names a checkpoint once every process
/// has written it; then the others delete what it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Process 0: hold your time (round `0`) and say where it is.
    Prepare(u64),
    /// Another process: its time (the second word), held, for a round.
    Time(u64, u64),
    /// Process 0: the cut of a round is at time `1` (0: no cut, go on).
    Cut(u64, u64),
    /// Another process: its checkpoint at this time is written.
    Written(u64),
    /// Process 0: a commit names the checkpoint at `0`, replacing the one
    /// at `1` (0: none).
    Committed(u64, u64),
}

impl Control {
    fn encode(self) -> [u8; 17] {
        let (kind, a, b) = match self {
            Control::Prepare(r) => (PREPARE, r, 0),
            Control::Time(r, t) => (TIME, r, t),
            Control::Cut(r, at) => (CUT, r, at),
            Control::Written(at) => (WRITTEN, at, 0),
            Control::Committed(now, before) => (COMMITTED, now, before),
        };
        let mut m = [0u8; 17];
        m[0] = kind;
        m[1..9].copy_from_slice(&a.to_be_bytes());
        m[9..].copy_from_slice(&b.to_be_bytes());
        m
    }

    fn decode(kind: u8, a: u64, b: u64) -> Option<Control> {
        Some(match kind {
            PREPARE => Control::Prepare(a),
            TIME => Control::Time(a, b),
            CUT => Control::Cut(a, b),
            WRITTEN => Control::Written(a),
            COMMITTED => Control::Committed(a, b),
            _ => return None,
        })
    }
}

/// What this process does with a control message from process `p`.
type OnControl = Box<dyn Fn(usize, Control) + Send + Sync>;
static ON_CONTROL: std::sync::Mutex<Option<OnControl>> = std::sync::Mutex::new(None);

/// Hands every control message to `f` (on the heartbeat connection's
/// thread: `f` must not wait, or the heartbeats it reads go unread).
pub fn on_control(f: OnControl) {
    if let Ok(mut c) = ON_CONTROL.lock() {
        *c = Some(f);
    }
}

fn heard(p: usize, m: Control) {
    if let Ok(f) = ON_CONTROL.lock() {
        if let Some(f) = f.as_ref() {
            f(p, m);
        }
    }
}

/// Sends `m` on every heartbeat connection (process 0: to every other
/// process; another: to process 0). Returns how many took it.
pub fn send_control(m: Control) -> usize {
    let Ok(mut links) = LINKS.lock() else {
        return 0;
    };
    let bytes = m.encode();
    let Some((_, links)) = links.as_mut() else {
        return 0;
    };
    // A connection a write failed on (perhaps part-way) is not written
    // again: its reader would be out of step.
    links.retain_mut(|(_, s)| s.write_all(&bytes).is_ok());
    links.len()
}

/// How many other processes this one has heartbeat connections to (process
/// 0: all the others; another: 1).
pub fn linked() -> usize {
    LINKS
        .lock()
        .ok()
        .and_then(|l| l.as_ref().map(|l| l.1.len()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_read_back_as_written() {
        for m in [
            Control::Prepare(3),
            Control::Time(3, 60_001),
            Control::Cut(3, u64::MAX - 1),
            Control::Written(60_002),
            Control::Committed(60_002, 1),
        ] {
            let b = m.encode();
            let word = |i: usize| u64::from_be_bytes(b[1 + 8 * i..9 + 8 * i].try_into().unwrap());
            assert_eq!(Control::decode(b[0], word(0), word(1)), Some(m));
        }
        assert_eq!(Control::decode(ALIVE, 0, 0), None);
    }
}
