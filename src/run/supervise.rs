//! The supervisor: every component of a run (sources, the Parquet writer,
//! the status tail, the context watcher) runs under it. The first failure,
//! an error or a panic, ends the run: it is reported once, naming the
//! component and its config key, the sources are told to stop and the
//! engine to close what it holds, and the run returns the failure.
//!
//! Once the run is stopping (a signal or a failure), a watchdog gives it
//! `shutdown_timeout` to finish; past that the process exits with
//! [`EXIT_SHUTDOWN_TIMEOUT`], naming what is still running.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ingest::Ingest;
use crate::model::panic_message;

/// Exit code of a run a component ended (an error at run time).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a wrong configuration (sysexits' `EX_CONFIG`), and of a
/// lake whose commit record belongs to another dataflow.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code of a run ended by a panic, caught at a component's boundary.
pub const EXIT_INTERNAL: u8 = 70;
/// Exit code when a stopping run did not finish within `shutdown_timeout`.
pub const EXIT_SHUTDOWN_TIMEOUT: u8 = 124;
/// Exit code after a second signal (abort at once).
pub const EXIT_ABORTED: u8 = 130;

/// Why a run failed: what to print, and the process's exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

impl From<String> for RunError {
    fn from(message: String) -> Self {
        RunError {
            code: EXIT_FAILED,
            message,
        }
    }
}

/// A component: a name for messages (`source \`plant\` (sources[0])`).
#[derive(Clone, Debug)]
pub struct Component(pub String);

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

thread_local! {
    /// Set while a supervised component runs on this thread: its panics are
    /// reported by the supervisor, not by the panic hook.
    static SUPERVISED: Cell<bool> = const { Cell::new(false) };
    /// The last panic's message and location on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic hook (a backtrace on stderr) with one line:
/// `plantflow: internal error in <thread>: <message> (at file:line)`. A
/// panic inside a supervised component prints nothing here: the supervisor
/// reports it as the component's failure. `RUST_BACKTRACE=1` adds the
/// backtrace, for bug reports.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("{msg}{at}");
        // A cluster's peer is gone (timely's connection threads panic):
        // the dataflow cannot complete without it, so this process stops,
        // naming it.
        let thread = std::thread::current();
        if let Some(lost) = crate::engine::cluster::peer_lost(thread.name().unwrap_or(""), &msg) {
            super::cluster::peer_gone(lost, &msg);
            return;
        }
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(text.clone()));
        if !SUPERVISED.with(|s| s.get()) {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("a thread");
            eprintln!("plantflow: internal error in {name}: {text}");
        }
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// The supervisor of one run.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    ingest: Arc<Ingest>,
    failure: Mutex<Option<RunError>>,
    /// When the run began stopping (a signal or a failure).
    stopping_since: Mutex<Option<Instant>>,
    running: Mutex<Vec<String>>,
}

impl Supervisor {
    /// Supervises a run whose input goes through `ingest`: input that ends
    /// because of a stop is abandoned, unless the run `drain`s (see
    /// [`Ingest::on_stop`]).
    pub fn new(stop: Arc<AtomicBool>, ingest: Arc<Ingest>, drain: bool) -> Arc<Supervisor> {
        ingest.on_stop(stop.clone(), drain);
        Arc::new(Supervisor {
            stop,
            ingest,
            failure: Mutex::new(None),
            stopping_since: Mutex::new(None),
            running: Mutex::new(Vec::new()),
        })
    }

    /// The run's stop flag.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Whether the run is stopping on a signal or a failure (not only
    /// ending because its input did).
    pub fn is_stopping(&self) -> bool {
        self.stopping_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// The run is stopping (a signal): start the shutdown clock.
    pub fn stopping(&self) {
        let mut s = self
            .stopping_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.get_or_insert_with(Instant::now);
    }

    /// A component failed: the first failure is kept and reported, and the
    /// run stops (sources stop reading, the engine closes what it holds).
    pub fn fail(&self, who: &Component, cause: &str, code: u8) {
        {
            let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                // Reported once, by whoever ends the run (the CLI's last line).
                let message = format!("{who} failed: {cause}");
                *f = Some(RunError { code, message });
            }
        }
        self.stopping();
        self.stop.store(true, Relaxed);
        self.ingest.finish();
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<RunError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` as component `who`: an error or a panic fails the run.
    /// Returns `f`'s value when it succeeded.
    pub fn guard<T>(&self, who: &Component, f: impl FnOnce() -> Result<T, String>) -> Option<T> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(who.0.clone());
        let was = SUPERVISED.with(|s| s.replace(true));
        let out = catch_unwind(AssertUnwindSafe(f));
        SUPERVISED.with(|s| s.set(was));
        {
            let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = r.iter().position(|n| *n == who.0) {
                r.remove(i);
            }
        }
        match out {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.fail(who, &e, EXIT_FAILED);
                None
            }
            Err(payload) => {
                let text = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| panic_message(payload.as_ref()));
                self.fail(who, &format!("internal error: {text}"), EXIT_INTERNAL);
                None
            }
        }
    }

    /// Starts the watchdog: once the run is stopping, it has `timeout` to
    /// finish (`done` set), or the process exits with
    /// [`EXIT_SHUTDOWN_TIMEOUT`] naming the components still running.
    pub fn watchdog(self: &Arc<Self>, timeout: Duration, done: Arc<AtomicBool>) {
        let sup = self.clone();
        let spawned = std::thread::Builder::new()
            .name("plantflow-watchdog".into())
            .spawn(move || loop {
                if done.load(Relaxed) {
                    return;
                }
                let since = *sup.stopping_since.lock().unwrap_or_else(|e| e.into_inner());
                if since.is_some_and(|t| t.elapsed() >= timeout) {
                    let running = sup
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .join(", ");
                    let waiting = if running.is_empty() {
                        "the engine and the writer".to_string()
                    } else {
                        running
                    };
                    // The cause first, when a failure began the stop.
                    if let Some(f) = sup.failure() {
                        eprintln!("plantflow: {f}");
                    }
                    eprintln!(
                        "plantflow: did not stop within {} s (still running: {waiting}); exiting",
                        timeout.as_secs_f64()
                    );
                    std::process::exit(EXIT_SHUTDOWN_TIMEOUT as i32);
                }
                std::thread::sleep(Duration::from_millis(50));
            });
        if let Err(e) = spawned {
            tracing::warn!("no shutdown watchdog: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor() -> (Arc<Supervisor>, Arc<AtomicBool>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (ingest, _rx) = Ingest::new(1, 1, 60_000, 4);
        (Supervisor::new(stop.clone(), ingest, false), stop)
    }

    #[test]
    fn an_error_fails_the_run_once_naming_the_component() {
        let (sup, stop) = supervisor();
        let who = Component("source `plant` (sources[0])".into());
        assert_eq!(sup.guard(&who, || Ok::<_, String>(7)), Some(7));
        assert!(sup.failure().is_none() && !stop.load(Relaxed));
        assert_eq!(
            sup.guard(&who, || Err::<(), _>("broker refused".into())),
            None
        );
        let later = Component("sink `lake` (sinks[0])".into());
        assert_eq!(sup.guard(&later, || Err::<(), _>("disk full".into())), None);
        let f = sup.failure().expect("a failure");
        assert_eq!(f.code, EXIT_FAILED);
        assert_eq!(
            f.message,
            "source `plant` (sources[0]) failed: broker refused"
        );
        assert!(stop.load(Relaxed), "the sources are told to stop");
    }

    #[test]
    fn a_panic_is_caught_and_reported_as_an_internal_error() {
        let (sup, stop) = supervisor();
        let who = Component("source `x` (sources[1])".into());
        let out: Option<()> = sup.guard(&who, || {
            let v: Vec<i64> = Vec::new();
            assert!(v.len() == 1, "period must not be zero");
            Ok(())
        });
        assert_eq!(out, None);
        let f = sup.failure().expect("a failure");
        assert_eq!(f.code, EXIT_INTERNAL);
        assert!(
            f.message.starts_with(
                "source `x` (sources[1]) failed: internal error: period must not be zero"
            ),
            "{}",
            f.message
        );
        assert!(stop.load(Relaxed));
    }
}
