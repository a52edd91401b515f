//! A simulated logging power meter on Modbus TCP (tokio-modbus server),
//! for the demo: it serves one record at a time — the plant's simulated
//! time and the meter's readings — in holding registers:
//!
//! | registers | value |
//! |---|---|
//! | 0–1 | kW, f32 |
//! | 2–3 | kvar, f32 |
//! | 4 | power factor × 1000, i16 |
//! | 6–7 | active energy in 0.01 kWh, u32 counter |
//! | 8–11 | the record's time, Unix ms, u64 |
//!
//! The demo sets a record and waits until a poll has read it (its time
//! register) before it sets the next, so a meter on an accelerated clock
//! is read record by record, like a data logger read out.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response};

/// The demo's meter: a sub-meter of site 1's compressor, its tags and
/// context rows (kind `sub_meter`: no rule or bill counts it twice).
pub const ASSET_ROWS: &str = "\
site1/l1/pm1/kw,pm1,site1,l1,sub_meter,0,meter_kw,0,0
site1/l1/pm1/kvar,pm1,site1,l1,sub_meter,0,meter_kvar,0,0
site1/l1/pm1/pf,pm1,site1,l1,sub_meter,0,meter_pf,0,0
site1/l1/pm1/kwh,pm1,site1,l1,sub_meter,0,meter_kwh,0,0
";

/// The asset the meter measures.
pub const MEASURES: &str = "site1/l1/comp1/power_kw";

/// How often the meter logs a record (simulated time).
pub const EVERY_MS: i64 = 15 * 60_000;

/// The meter's power factor (its kvar follow from it).
pub const PF: f64 = 0.92;

const WORDS: usize = 12;
const TIME_AT: usize = 8;

#[derive(Default)]
struct Registers {
    words: [u16; WORDS],
    /// Bumped by every record set.
    version: u64,
}

#[derive(Clone, Default)]
struct Shared {
    regs: Arc<Mutex<Registers>>,
    /// The version of the last record a poll read whole (with its time).
    read: Arc<AtomicU64>,
}

struct Service(Shared);

impl tokio_modbus::server::Service for Service {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        std::future::ready(match req {
            Request::ReadHoldingRegisters(start, n) => {
                let (s, e) = (start as usize, start as usize + n as usize);
                if e > WORDS || n == 0 {
                    Err(ExceptionCode::IllegalDataAddress)
                } else {
                    let r = self.0.regs.lock().unwrap_or_else(|p| p.into_inner());
                    if s <= TIME_AT && e >= TIME_AT + 4 {
                        self.0.read.fetch_max(r.version, SeqCst);
                    }
                    Ok(Response::ReadHoldingRegisters(r.words[s..e].to_vec()))
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// One meter reading, as the meter logs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record {
    pub t_ms: i64,
    pub kw: f32,
    pub kvar: f32,
    /// Power factor × 1000.
    pub pf_milli: i16,
    /// The energy counter in 0.01 kWh (wraps at 2^32).
    pub kwh_centi: u32,
}

/// The running meter.
pub struct MeterServer {
    shared: Shared,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MeterServer {
    /// Starts the meter on a free loopback port.
    pub fn start() -> Result<MeterServer, String> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("the simulated Modbus meter: {e}"))?;
        let port = std_listener.local_addr().map_err(|e| e.to_string())?.port();
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let shared = Shared::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("plantflow-sim-meter".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let server = Server::new(listener);
                    let on_connected = |stream, addr| {
                        let s = s.clone();
                        async move {
                            accept_tcp_connection(stream, addr, move |_| {
                                Ok(Some(Service(s.clone())))
                            })
                        }
                    };
                    let stop = async move {
                        let _ = rx.await;
                    };
                    let _ = server.serve_until(&on_connected, |_| {}, stop).await;
                });
            })
            .map_err(|e| e.to_string())?;
        Ok(MeterServer {
            shared,
            port,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves `r` from now on.
    pub fn set(&self, r: Record) {
        let mut g = self.shared.regs.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut g.words;
        let kw = r.kw.to_bits();
        let kvar = r.kvar.to_bits();
        w[0] = (kw >> 16) as u16;
        w[1] = kw as u16;
        w[2] = (kvar >> 16) as u16;
        w[3] = kvar as u16;
        w[4] = r.pf_milli as u16;
        w[5] = 0;
        w[6] = (r.kwh_centi >> 16) as u16;
        w[7] = r.kwh_centi as u16;
        let t = r.t_ms as u64;
        for i in 0..4 {
            w[TIME_AT + i] = (t >> (48 - 16 * i)) as u16;
        }
        g.version += 1;
    }

    /// Waits until a poll has read the record set last; false after
    /// `limit` or when `give_up` says so.
    pub fn wait_read(&self, limit: Duration, give_up: impl Fn() -> bool) -> bool {
        let want = self
            .shared
            .regs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .version;
        let since = Instant::now();
        while self.shared.read.load(SeqCst) < want {
            if since.elapsed() > limit || give_up() {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    pub fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MeterServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
