//! Request coalescing and the per-device polling task.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};

use super::register::{counter_step, Step, Table};
use super::{DevicePlan, GroupPlan, Point};
use crate::ingest::field::{send, FieldEv};
use crate::model::{now_ms, Quality};
use crate::stats::Stats;

/// One read request: a run of a table and the points it carries.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Read {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// Indices into the device's points.
    pub points: Vec<u32>,
}

/// The requests that poll `group` of a device: points sorted by table and
/// address, runs joined while they stay within the table's limit (and
/// `max_read` for registers) and no more than `max_gap` unused registers
/// apart.
pub(super) fn reads(points: &[Point], group: usize, max_read: u16, max_gap: u16) -> Vec<Read> {
    let mut idx: Vec<u32> = (0..points.len() as u32)
        .filter(|&i| points[i as usize].group == group)
        .collect();
    idx.sort_by_key(|&i| (points[i as usize].table, points[i as usize].address));
    let mut out: Vec<Read> = Vec::new();
    for i in idx {
        let p = &points[i as usize];
        let (a, end) = (
            u32::from(p.address),
            u32::from(p.address) + u32::from(p.words()),
        );
        let limit = if p.table.is_bits() {
            u32::from(Table::Coil.max_read())
        } else {
            u32::from(max_read.clamp(1, Table::Holding.max_read()))
        };
        if let Some(r) = out.last_mut() {
            let r_end = u32::from(r.start) + u32::from(r.count);
            let new_end = r_end.max(end);
            if r.table == p.table
                && a <= r_end + u32::from(max_gap)
                && new_end - u32::from(r.start) <= limit
            {
                r.count = (new_end - u32::from(r.start)) as u16;
                r.points.push(i);
                continue;
            }
        }
        out.push(Read {
            table: p.table,
            start: p.address,
            count: (end - a) as u16,
            points: vec![i],
        });
    }
    out
}

/// Exceptions that say something about the registers asked for (so a
/// joined request is split to find which): illegal function, address or
/// value, and device failure. Busy and gateway exceptions are about the
/// moment, not the registers.
fn names_registers(e: ExceptionCode) -> bool {
    matches!(
        e,
        ExceptionCode::IllegalFunction
            | ExceptionCode::IllegalDataAddress
            | ExceptionCode::IllegalDataValue
            | ExceptionCode::ServerDeviceFailure
    )
}

/// `0x02 IllegalDataAddress`.
fn exception_name(e: ExceptionCode) -> String {
    format!("0x{:02X} {e:?}", u8::from(e))
}

/// What one request came back with.
enum Outcome {
    Words(Vec<u16>),
    Exception(ExceptionCode),
    /// Timeout, I/O error or a garbled answer: the connection is gone.
    Failed(String),
    /// The source is stopping.
    Stopped,
}

type Stop = tokio::sync::watch::Receiver<bool>;

async fn request(ctx: &mut Context, r: &Read, t: Duration, stop: &mut Stop) -> Outcome {
    let bits = |b: Vec<bool>| b.into_iter().map(u16::from).collect::<Vec<u16>>();
    let read = async {
        match r.table {
            Table::Holding => ctx.read_holding_registers(r.start, r.count).await,
            Table::Input => ctx.read_input_registers(r.start, r.count).await,
            Table::Coil => ctx.read_coils(r.start, r.count).await.map(|x| x.map(bits)),
            Table::Discrete => ctx
                .read_discrete_inputs(r.start, r.count)
                .await
                .map(|x| x.map(bits)),
        }
    };
    // A silent device holds only its own task, and never the stop.
    let res = tokio::select! {
        res = timeout(t, read) => res,
        _ = stop.wait_for(|s| *s) => return Outcome::Stopped,
    };
    match res {
        Err(_) => Outcome::Failed(format!("no answer within {} ms", t.as_millis())),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Ok(Ok(Err(e))) => Outcome::Exception(e),
        Ok(Ok(Ok(w))) if w.len() < r.count as usize => Outcome::Failed(format!(
            "asked for {} {} values at {}, got {}",
            r.count,
            r.table.name(),
            r.start,
            w.len()
        )),
        Ok(Ok(Ok(w))) => Outcome::Words(w),
    }
}

async fn connect(dev: &DevicePlan, stop: &mut Stop) -> Result<Context, Option<String>> {
    let t = Duration::from_millis(dev.timeout_ms);
    let res = tokio::select! {
        res = timeout(t, tokio::net::TcpStream::connect(dev.host.as_str())) => res,
        _ = stop.wait_for(|s| *s) => return Err(None),
    };
    match res {
        Err(_) => Err(Some(format!(
            "connect: no answer within {} ms",
            dev.timeout_ms
        ))),
        Ok(Err(e)) => Err(Some(format!("connect: {e}"))),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(tokio_modbus::client::tcp::attach_slave(s, Slave(dev.unit)))
        }
    }
}

/// How a poll ended.
enum Polled {
    Ok,
    /// The device failed (why): it is down.
    Down(String),
    Stopped,
}

/// A device's connection and what it keeps between polls.
struct Device {
    plan: Arc<DevicePlan>,
    index: usize,
    conn: Option<Context>,
    up: bool,
    /// Per group: its requests (split where exceptions named registers).
    reads: Vec<Vec<Read>>,
    /// The device's points and, last, its time register (if it has one).
    points: Vec<Point>,
    /// The time register's index in `points`.
    time: Option<u32>,
    /// Per group: the device time of its last poll.
    last_time: Vec<Option<i64>>,
    /// Counters' previous raw readings.
    prev: Vec<Option<f64>>,
    tx: SyncSender<FieldEv>,
    stats: Arc<Stats>,
    stop: Stop,
}

/// Polls one device until `stop`: its groups at their intervals, over one
/// connection, reconnecting with backoff when it fails.
pub(super) async fn device_task(
    plan: Arc<DevicePlan>,
    index: usize,
    groups: Vec<GroupPlan>,
    tx: SyncSender<FieldEv>,
    stop: Stop,
    stats: Arc<Stats>,
) {
    let mut points = plan.points.clone();
    let time = plan.time.as_ref().map(|t| {
        points.push(t.clone());
        (points.len() - 1) as u32
    });
    // The time register is read with every group that has points.
    let reads = (0..groups.len())
        .map(|g| {
            let mut pts = points.clone();
            match time {
                Some(t) if plan.points.iter().any(|p| p.group == g) => {
                    pts[t as usize].group = g;
                }
                Some(t) => pts[t as usize].group = usize::MAX,
                None => {}
            }
            reads(&pts, g, plan.max_read, plan.max_gap)
        })
        .collect::<Vec<_>>();
    let mut d = Device {
        prev: vec![None; points.len()],
        last_time: vec![None; groups.len()],
        points,
        time,
        plan,
        index,
        conn: None,
        up: true,
        reads,
        tx,
        stats,
        stop,
    };
    let interval = |g: usize| Duration::from_millis(groups[g].interval_ms.max(1));
    let start = Instant::now();
    let mut due: Vec<Option<Instant>> = (0..groups.len())
        .map(|g| (!d.reads[g].is_empty()).then_some(start))
        .collect();
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some((g, at)) = due
            .iter()
            .enumerate()
            .filter_map(|(g, t)| t.map(|t| (g, t)))
            .min_by_key(|&(_, t)| t)
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = d.stop.wait_for(|s| *s) => return,
        }
        let next = at + interval(g);
        let polled = d.poll(g).await;
        let now = Instant::now();
        match polled {
            Polled::Stopped => return,
            Polled::Down(why) => {
                d.went_down(why);
                // Every group waits for the next try, backing off until a
                // poll succeeds again.
                let retry = now + backoff;
                backoff = (backoff * 2).min(Duration::from_millis(d.plan.reconnect_max_ms));
                for t in due.iter_mut().flatten() {
                    *t = (*t).max(retry);
                }
                continue;
            }
            Polled::Ok => {}
        }
        backoff = Duration::from_millis(250);
        if !d.up {
            d.up = true;
            let _ = send(
                &d.tx,
                FieldEv::Up {
                    device: d.index,
                    at: now_ms(),
                },
            );
        }
        due[g] = Some(if next < now {
            d.stats.event(
                "modbus: polls late (a poll took longer than its interval)",
                1,
            );
            now
        } else {
            next
        });
    }
}

impl Device {
    fn went_down(&mut self, reason: String) {
        self.conn = None;
        if self.up {
            self.up = false;
            let _ = send(
                &self.tx,
                FieldEv::Down {
                    device: self.index,
                    reason,
                },
            );
        }
    }

    /// Polls group `g` once. What was read is handed on however the poll
    /// ends (a counter's reading has moved on with it).
    async fn poll(&mut self, g: usize) -> Polled {
        let ts = now_ms();
        let t = Duration::from_millis(self.plan.timeout_ms);
        let mut values = Vec::new();
        let mut failed = Vec::new();
        let mut i = 0;
        let mut tries = 0;
        // Counted once a poll: the stats' events are behind one lock.
        let mut requests = 0;
        let end = loop {
            if i == self.reads[g].len() {
                break Polled::Ok;
            }
            let Some(ctx) = self.conn.as_mut() else {
                match connect(&self.plan, &mut self.stop).await {
                    Ok(c) => self.conn = Some(c),
                    Err(None) => break Polled::Stopped,
                    Err(Some(e)) => break Polled::Down(e),
                }
                continue;
            };
            let r = &self.reads[g][i];
            requests += 1;
            match request(ctx, r, t, &mut self.stop).await {
                Outcome::Words(w) => {
                    self.decode(g, i, &w, &mut values);
                    i += 1;
                    tries = 0;
                }
                Outcome::Exception(e) if r.points.len() > 1 && names_registers(e) => {
                    // Split the request to find the register(s) at fault.
                    let r = self.reads[g].remove(i);
                    let singles: Vec<Read> = r
                        .points
                        .iter()
                        .map(|&p| {
                            let pt = &self.points[p as usize];
                            Read {
                                table: pt.table,
                                start: pt.address,
                                count: pt.words(),
                                points: vec![p],
                            }
                        })
                        .collect();
                    self.stats
                        .event("modbus: requests split after an exception", 1);
                    self.reads[g].splice(i..i, singles);
                }
                Outcome::Exception(e) => {
                    let why = format!("Modbus exception {}", exception_name(e));
                    failed.extend(r.points.iter().map(|&p| (p, why.clone())));
                    i += 1;
                    tries = 0;
                }
                Outcome::Stopped => break Polled::Stopped,
                Outcome::Failed(e) => {
                    // A late answer would be read as the next one's: start
                    // over on a new connection.
                    self.conn = None;
                    tries += 1;
                    if tries > self.plan.retries {
                        break Polled::Down(e);
                    }
                    self.stats.event("modbus: requests retried", 1);
                }
            }
        };
        if requests > 0 {
            self.stats.event("modbus: requests", requests);
        }
        let ts = match self.device_time(g, &mut values, &mut failed) {
            Some(t) => t,
            None if self.time.is_some() => return end,
            None => ts,
        };
        if !values.is_empty() || !failed.is_empty() {
            let ev = FieldEv::Polled {
                device: self.index,
                ts,
                values,
                failed,
            };
            let _ = send(&self.tx, ev);
        }
        end
    }

    /// With a time register: the poll's event time (taken out of the
    /// values), or `None` when the poll gives no samples: the register
    /// failed, or the device's time has not moved since the group's last
    /// poll (a logger with no new record). Without one: `None`.
    fn device_time(
        &mut self,
        g: usize,
        values: &mut Vec<(u32, f64, Quality)>,
        failed: &mut Vec<(u32, String)>,
    ) -> Option<i64> {
        let t = self.time?;
        let at = values.iter().position(|v| v.0 == t);
        let time = at.map(|i| values.remove(i).1 as i64);
        let lost = failed.len();
        failed.retain(|f| f.0 != t);
        if lost != failed.len() || time.is_none() {
            if !values.is_empty() {
                self.stats
                    .event("modbus: polls dropped (no device time)", 1);
            }
            values.clear();
            return None;
        }
        if std::mem::replace(&mut self.last_time[g], time) == time {
            self.stats
                .event("modbus: polls with an unchanged device time", 1);
            values.clear();
            failed.clear();
            return None;
        }
        time
    }

    /// The values of request `i` of group `g` from its words.
    fn decode(&mut self, g: usize, i: usize, words: &[u16], out: &mut Vec<(u32, f64, Quality)>) {
        let r = &self.reads[g][i];
        for &p in &r.points {
            let pt = &self.points[p as usize];
            let at = (pt.address - r.start) as usize;
            let raw = pt.decode.raw(&words[at..at + pt.words() as usize]);
            if Some(p) == self.time {
                // Milliseconds: its scale turned seconds into them.
                out.push((p, pt.decode.value(raw), Quality::Good));
                continue;
            }
            let Some(range) = pt.decode.rollover else {
                out.push((p, pt.decode.value(raw), Quality::Good));
                continue;
            };
            match counter_step(self.prev[p as usize].replace(raw), raw, range) {
                Step::First => {}
                Step::Increase(d) => out.push((p, d * pt.decode.scale, Quality::Good)),
                Step::Reset => self.stats.event("modbus: counter resets", 1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::register::{DataType, Decode};
    use super::*;

    fn pt(table: Table, address: u16, kind: DataType, group: usize) -> Point {
        Point {
            tag: format!("t{address}"),
            table,
            address,
            decode: Decode::plain(kind),
            group,
        }
    }

    #[test]
    fn adjacent_registers_join_up_to_the_limit() {
        let points = vec![
            pt(Table::Holding, 10, DataType::F32, 0),
            pt(Table::Holding, 0, DataType::U16, 0),
            pt(Table::Holding, 1, DataType::U16, 0),
            pt(Table::Holding, 12, DataType::U16, 1),
            pt(Table::Input, 2, DataType::U16, 0),
            pt(Table::Coil, 5, DataType::Bool, 0),
            pt(Table::Coil, 6, DataType::Bool, 0),
        ];
        let r = reads(&points, 0, 125, 0);
        let spans: Vec<_> = r
            .iter()
            .map(|r| (r.table, r.start, r.count, r.points.clone()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (Table::Coil, 5, 2, vec![5, 6]),
                (Table::Holding, 0, 2, vec![1, 2]),
                (Table::Holding, 10, 2, vec![0]),
                (Table::Input, 2, 1, vec![4]),
            ]
        );
        // A gap of 8 unused registers may be read when allowed.
        let r = reads(&points, 0, 125, 8);
        assert_eq!(
            (r[1].start, r[1].count, r[1].points.clone()),
            (0, 12, vec![1, 2, 0])
        );
        // 200 adjacent registers: 125 + 75; with max_read 60: 60 + 60 + 60 + 20.
        let many: Vec<Point> = (0..200)
            .map(|a| pt(Table::Input, a, DataType::U16, 0))
            .collect();
        let counts = |m| {
            reads(&many, 0, m, 0)
                .iter()
                .map(|r| r.count)
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(125), vec![125, 75]);
        assert_eq!(counts(60), vec![60, 60, 60, 20]);
        // A 32-bit value is never cut across two requests.
        let odd: Vec<Point> = (0..63)
            .map(|a| pt(Table::Holding, 2 * a, DataType::U32, 0))
            .collect();
        assert!(reads(&odd, 0, 125, 0).iter().all(|r| r.count % 2 == 0));
    }
}
