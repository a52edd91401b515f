//! The wire half of the BACnet source: one client (one UDP port) for the
//! source, one task per device, and the dispatcher that hands COV
//! notifications to the decoder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use bacnet_client::client::BACnetClient;
use bacnet_encoding::primitives::decode_application_value;
use bacnet_services::who_is::DeviceInstanceRange;
use bacnet_types::constructed::{PropertyReference, ReadAccessSpecification};
use bacnet_types::enums::{AbortReason, ObjectType, PropertyIdentifier};
use bacnet_types::error::{Error, RemoteError};
use bacnet_types::primitives::{ObjectIdentifier, PropertyValue};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{unit_name, unit_symbol, BacnetSourcePlan, DevicePlan, Object, Point};
use crate::ingest::field::{send, FieldEv};
use crate::ingest::watch::ReportedUnit;
use crate::model::{now_ms, Quality};
use crate::stats::Stats;

type Client = Arc<BACnetClient>;
type Stop = watch::Receiver<bool>;
/// Per point of a device: it reports the unit the config expects (shared
/// by the device's task, which reads units, and the COV dispatcher).
type Units = Arc<[AtomicBool]>;

/// Opens the source's BACnet/IP port.
pub(super) async fn start(plan: &BacnetSourcePlan) -> Result<Client, String> {
    let c = BACnetClient::bip_builder()
        .interface(*plan.bind.ip())
        .port(plan.bind.port())
        .broadcast_address(plan.broadcast)
        .apdu_timeout_ms(plan.timeout_ms)
        .apdu_retries(1)
        .cov_channel_capacity(4096)
        .build_any()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(c))
}

/// Closes the port once every task has let go of the client.
pub(super) async fn stop(client: Client) {
    if let Ok(mut c) = Arc::try_unwrap(client) {
        let _ = c.stop().await;
    }
}

/// Starts a task per device and the COV dispatcher.
pub(super) fn spawn(
    rt: &tokio::runtime::Handle,
    plan: &BacnetSourcePlan,
    client: &Client,
    tx: &SyncSender<FieldEv>,
    stop: &Stop,
    stats: &Arc<Stats>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let settings = Arc::new(plan.clone());
    let units: Vec<Units> = plan
        .devices
        .iter()
        .map(|d| d.points.iter().map(|_| AtomicBool::new(true)).collect())
        .collect();
    let mut tasks: Vec<_> = (0..plan.devices.len())
        .map(|i| {
            let d = Device {
                plan: settings.clone(),
                index: i,
                client: client.clone(),
                tx: tx.clone(),
                stats: stats.clone(),
                stop: stop.clone(),
                mac: None,
                up: true,
                polled: vec![true; plan.devices[i].points.len()],
                refused: vec![false; plan.devices[i].points.len()],
                units_ok: units[i].clone(),
            };
            rt.spawn(d.run())
        })
        .collect();
    tasks.push(rt.spawn(dispatch(
        settings,
        units,
        client.cov_notifications(),
        tx.clone(),
        stop.clone(),
        stats.clone(),
    )));
    tasks
}

/// A BACnet/IP address as the client's MAC: 4 octets of IP, 2 of port.
fn mac_of(a: std::net::SocketAddrV4) -> Vec<u8> {
    let mut m = a.ip().octets().to_vec();
    m.extend_from_slice(&a.port().to_be_bytes());
    m
}

/// The subscriber process id of device `i`'s subscriptions.
fn process_id(i: usize) -> u32 {
    i as u32 + 1
}

/// Whether an error means the device did not answer (rather than answered
/// with an error).
fn no_answer(e: &Error) -> bool {
    match e {
        Error::Remote(RemoteError::Abort { reason }) => *reason == AbortReason::TSM_TIMEOUT,
        Error::Remote(_) | Error::Structured { .. } => false,
        _ => true,
    }
}

fn oid(o: Object) -> ObjectIdentifier {
    // Instances were checked against the limit when the config was read.
    ObjectIdentifier::new(o.object_type(), o.instance).unwrap_or_else(|_| {
        ObjectIdentifier::new(o.object_type(), 0).expect("instance 0 is always valid")
    })
}

/// A present value as a number: REAL and DOUBLE as they are, a binary
/// object's enumerated state as 0 or 1, a multi-state object's state.
fn number(v: &PropertyValue) -> Option<f64> {
    match v {
        PropertyValue::Real(x) => Some(f64::from(*x)),
        PropertyValue::Double(x) => Some(*x),
        PropertyValue::Unsigned(x) => Some(*x as f64),
        PropertyValue::Signed(x) => Some(f64::from(*x)),
        PropertyValue::Enumerated(x) => Some(f64::from(*x)),
        PropertyValue::Boolean(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Status flags → quality: fault is bad; out-of-service or overridden is
/// uncertain; in-alarm alone is good. Bit 0 of a BACnet bit string is the
/// first octet's high bit.
fn quality(flags: &PropertyValue) -> Quality {
    let PropertyValue::BitString { data, .. } = flags else {
        return Quality::Good;
    };
    let b = data.first().copied().unwrap_or(0);
    let (fault, overridden, out_of_service) = (b & 0x40 != 0, b & 0x20 != 0, b & 0x10 != 0);
    if fault {
        Quality::Bad
    } else if overridden || out_of_service {
        Quality::Uncertain
    } else {
        Quality::Good
    }
}

fn decoded(raw: &[u8]) -> Option<PropertyValue> {
    decode_application_value(raw, 0).ok().map(|(v, _)| v)
}

/// A point's quality given whether its unit is the expected one.
fn with_unit(ok: &AtomicBool, q: Quality) -> Quality {
    if ok.load(Relaxed) {
        q
    } else {
        worse(q, Quality::Uncertain)
    }
}

/// The worse of two qualities.
fn worse(a: Quality, b: Quality) -> Quality {
    match (a, b) {
        (Quality::Bad, _) | (_, Quality::Bad) => Quality::Bad,
        (Quality::Uncertain, _) | (_, Quality::Uncertain) => Quality::Uncertain,
        _ => Quality::Good,
    }
}

/// One device's task state.
struct Device {
    plan: Arc<BacnetSourcePlan>,
    index: usize,
    client: Client,
    tx: SyncSender<FieldEv>,
    stats: Arc<Stats>,
    stop: Stop,
    /// Where it answers, once known.
    mac: Option<Vec<u8>>,
    /// False from a failed request until one succeeds.
    up: bool,
    /// Per point: read by polling (COV off, or refused).
    polled: Vec<bool>,
    /// Per point: the device refused its SubscribeCOV last time.
    refused: Vec<bool>,
    /// Per point: the device reports the unit the config expects.
    units_ok: Units,
}

/// What a try of the device came to.
enum Try {
    Ok,
    Down(String),
    Stopped,
}

impl Device {
    fn dev(&self) -> &DevicePlan {
        &self.plan.devices[self.index]
    }

    async fn run(mut self) {
        let interval = Duration::from_millis(self.plan.interval_ms.max(1));
        let renew = Duration::from_secs(u64::from(self.plan.cov_lifetime_s).div_ceil(2));
        let mut backoff = Duration::from_millis(250);
        let mut setup_due = true;
        let mut subscribed_at: Option<Instant> = None;
        let mut next = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.stop.wait_for(|s| *s) => return,
            }
            let at = Instant::now();
            if subscribed_at.is_some_and(|t| at >= t + renew) {
                setup_due = true;
            }
            let mut outcome = self.find().await;
            if matches!(outcome, Try::Ok) && setup_due {
                outcome = self.setup().await;
                if matches!(outcome, Try::Ok) {
                    setup_due = false;
                    subscribed_at = Some(at);
                }
            }
            if matches!(outcome, Try::Ok) {
                outcome = self.poll().await;
            }
            match outcome {
                Try::Stopped => return,
                Try::Down(why) => {
                    if std::mem::replace(&mut self.up, false) {
                        let _ = send(
                            &self.tx,
                            FieldEv::Down {
                                device: self.index,
                                reason: why,
                            },
                        );
                    }
                    // A device back from an outage may have restarted and
                    // forgotten its subscriptions. One found by Who-Is keeps
                    // the address its I-Am gave (the client's device table).
                    setup_due = true;
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_millis(self.plan.reconnect_max_ms));
                }
                Try::Ok => {
                    backoff = Duration::from_millis(250);
                    next = (at + interval).max(Instant::now());
                }
            }
        }
    }

    /// The device's address: known, or found by Who-Is for its instance.
    async fn find(&mut self) -> Try {
        if self.mac.is_some() {
            return Try::Ok;
        }
        let dev = self.dev();
        if let Some(a) = dev.address {
            self.mac = Some(mac_of(a));
            return Try::Ok;
        }
        let instance = dev.instance;
        let range = DeviceInstanceRange::new(instance, instance).ok();
        if let Err(e) = self.client.who_is(range).await {
            return Try::Down(format!("Who-Is: {e}"));
        }
        let deadline = Instant::now() + Duration::from_millis(self.plan.timeout_ms);
        while Instant::now() < deadline {
            if let Some(d) = self.client.get_device(instance).await {
                self.mac = Some(d.mac_address.to_vec());
                self.stats.event("bacnet: devices found by Who-Is", 1);
                return Try::Ok;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = self.stop.wait_for(|s| *s) => return Try::Stopped,
            }
        }
        Try::Down(format!(
            "no I-Am for device instance {instance} within {} ms of a Who-Is to {}",
            self.plan.timeout_ms, self.plan.broadcast
        ))
    }

    /// After (re)contact and at renewal: units checked, COV subscribed where
    /// wanted (objects refused are polled from then on).
    async fn setup(&mut self) -> Try {
        let mac = self.mac.clone().unwrap_or_default();
        // A device back from an outage is up (and its gap ends) before
        // the first notification of its new subscriptions arrives.
        if !self.up {
            match self.alive(&mac).await {
                Try::Ok => {}
                t => return t,
            }
        }
        if let Some(t) = self.check_units(&mac).await {
            return t;
        }
        if !self.plan.cov {
            return Try::Ok;
        }
        let (pid, lifetime) = (process_id(self.index), self.plan.cov_lifetime_s);
        let mut subscribed = 0;
        for i in 0..self.dev().points.len() {
            let p = &self.dev().points[i];
            if !p.cov {
                continue;
            }
            let o = oid(p.object);
            let r = self
                .client
                .subscribe_cov(&mac, pid, o, self.plan.cov_confirmed, Some(lifetime))
                .await;
            match r {
                Ok(()) => {
                    self.polled[i] = false;
                    self.refused[i] = false;
                    subscribed += 1;
                }
                Err(e) if no_answer(&e) => return self.no_answer("SubscribeCOV", &e),
                Err(e) => {
                    // Asked again at each renewal (the device may take it
                    // then); said and counted once.
                    let object = p.object;
                    if !std::mem::replace(&mut self.refused[i], true) {
                        tracing::info!(device = %self.dev().name, %object, "SubscribeCOV refused ({e}): polled");
                        self.stats.event("bacnet: COV refused, objects polled", 1);
                    }
                    self.polled[i] = true;
                }
            }
            if *self.stop.borrow() {
                return Try::Stopped;
            }
        }
        self.stats
            .event("bacnet: COV subscriptions made", subscribed);
        Try::Ok
    }

    /// Reads the `units` of analog points: each goes to the tag-quality
    /// view; one other than the point's `unit` is a dead letter and makes
    /// the point's samples uncertain.
    async fn check_units(&mut self, mac: &[u8]) -> Option<Try> {
        let want: Vec<usize> = (0..self.dev().points.len())
            .filter(|&i| self.dev().points[i].object.is_analog())
            .collect();
        for chunk in want.chunks(self.plan.max_objects) {
            let specs = chunk
                .iter()
                .map(|&i| spec(self.dev().points[i].object, &[PropertyIdentifier::UNITS]))
                .collect();
            let ack = match self.client.read_property_multiple(mac, specs).await {
                Ok(a) => a,
                Err(e) if no_answer(&e) => return Some(self.no_answer("ReadPropertyMultiple", &e)),
                Err(_) => continue,
            };
            for (&i, r) in chunk.iter().zip(&ack.list_of_read_access_results) {
                let p = &self.dev().points[i];
                let got = r
                    .list_of_results
                    .first()
                    .and_then(|e| e.property_value.as_deref())
                    .and_then(decoded);
                let Some(PropertyValue::Enumerated(u)) = got else {
                    continue;
                };
                let unit = ReportedUnit {
                    symbol: unit_symbol(u).to_string(),
                    name: unit_name(u),
                };
                let _ = send(
                    &self.tx,
                    FieldEv::Unit {
                        device: self.index,
                        point: i as u32,
                        unit,
                    },
                );
                let want = p.unit.unwrap_or(u);
                self.units_ok[i].store(u == want, Relaxed);
                if u != want {
                    let reason = format!(
                        "device {} reports {} for {} (tag `{}`), the config expects {}: its samples are uncertain",
                        self.dev().name,
                        unit_name(u),
                        p.object,
                        p.tag,
                        unit_name(want)
                    );
                    let _ = send(
                        &self.tx,
                        FieldEv::Reject {
                            device: self.index,
                            point: i as u32,
                            reason,
                        },
                    );
                }
            }
        }
        None
    }

    /// Reads the polled points' present value and status flags (or, when
    /// every point reports by COV, the device's `system-status`: it must
    /// still answer).
    async fn poll(&mut self) -> Try {
        let ts = now_ms();
        let mac = self.mac.clone().unwrap_or_default();
        let points: Vec<usize> = (0..self.polled.len()).filter(|&i| self.polled[i]).collect();
        if points.is_empty() {
            return self.alive(&mac).await;
        }
        let (mut values, mut failed) = (Vec::new(), Vec::new());
        let mut requests = 0;
        for chunk in points.chunks(self.plan.max_objects) {
            let props = [
                PropertyIdentifier::PRESENT_VALUE,
                PropertyIdentifier::STATUS_FLAGS,
            ];
            let specs = chunk
                .iter()
                .map(|&i| spec(self.dev().points[i].object, &props))
                .collect();
            requests += 1;
            let ack = match self.client.read_property_multiple(&mac, specs).await {
                Ok(a) => a,
                Err(e) if no_answer(&e) => {
                    self.stats.event("bacnet: requests", requests);
                    self.hand_on(ts, values, failed);
                    return self.no_answer("ReadPropertyMultiple", &e);
                }
                Err(e) => {
                    failed.extend(chunk.iter().map(|&i| (i as u32, format!("BACnet {e}"))));
                    continue;
                }
            };
            for (&i, r) in chunk.iter().zip(&ack.list_of_read_access_results) {
                match self.read(i, &r.list_of_results) {
                    Ok((v, q)) => values.push((i as u32, v, q)),
                    Err(why) => failed.push((i as u32, why)),
                }
            }
        }
        self.stats.event("bacnet: requests", requests);
        self.hand_on(ts, values, failed);
        self.answered()
    }

    /// Reads the device object's `system-status`: whether it answers.
    async fn alive(&mut self, mac: &[u8]) -> Try {
        let dev = oid_of_device(self.dev().instance);
        let specs = vec![spec_id(dev, &[PropertyIdentifier::SYSTEM_STATUS])];
        match self.client.read_property_multiple(mac, specs).await {
            Err(e) if no_answer(&e) => self.no_answer("ReadPropertyMultiple", &e),
            _ => self.answered(),
        }
    }

    /// Why a device that did not answer is down.
    fn no_answer(&self, what: &str, e: &Error) -> Try {
        Try::Down(match e {
            Error::Remote(_) | Error::Timeout(_) => format!(
                "no answer to {what} within {} ms, tried twice",
                self.plan.timeout_ms
            ),
            e => format!("{what}: {e}"),
        })
    }

    /// A point's sample from the results of its read.
    fn read(
        &self,
        i: usize,
        results: &[bacnet_services::rpm::ReadResultElement],
    ) -> Result<(f64, Quality), String> {
        let p = &self.dev().points[i];
        let mut value = None;
        let mut q = Quality::Good;
        for e in results {
            if let Some((class, code)) = e.error {
                return Err(format!(
                    "BACnet error {}/{} on {}",
                    class.name().unwrap_or("?").to_ascii_lowercase(),
                    code.name()
                        .unwrap_or("?")
                        .to_ascii_lowercase()
                        .replace('_', "-"),
                    e.property_identifier
                        .name()
                        .unwrap_or("?")
                        .to_ascii_lowercase()
                        .replace('_', "-")
                ));
            }
            let v = e.property_value.as_deref().and_then(decoded);
            if e.property_identifier == PropertyIdentifier::PRESENT_VALUE {
                value = Some(
                    v.as_ref()
                        .and_then(number)
                        .ok_or_else(|| format!("present-value {v:?} is not a number"))?,
                );
            } else if let Some(flags) = &v {
                q = quality(flags);
            }
        }
        let v = value.ok_or("no present-value in the answer")?;
        Ok((self.scaled(p, v), self.unit_quality(i, q)))
    }

    fn scaled(&self, p: &Point, v: f64) -> f64 {
        v * p.scale + p.offset
    }

    fn unit_quality(&self, i: usize, q: Quality) -> Quality {
        with_unit(&self.units_ok[i], q)
    }

    fn hand_on(&self, ts: i64, values: Vec<(u32, f64, Quality)>, failed: Vec<(u32, String)>) {
        if !values.is_empty() || !failed.is_empty() {
            let _ = send(
                &self.tx,
                FieldEv::Polled {
                    device: self.index,
                    ts,
                    values,
                    failed,
                },
            );
        }
    }

    /// The device answered: if it was down, it is up again.
    fn answered(&mut self) -> Try {
        if !std::mem::replace(&mut self.up, true) {
            let _ = send(
                &self.tx,
                FieldEv::Up {
                    device: self.index,
                    at: now_ms(),
                },
            );
        }
        Try::Ok
    }
}

fn oid_of_device(instance: u32) -> ObjectIdentifier {
    ObjectIdentifier::new(ObjectType::DEVICE, instance)
        .unwrap_or_else(|_| ObjectIdentifier::new(ObjectType::DEVICE, 0).expect("valid"))
}

fn spec(o: Object, props: &[PropertyIdentifier]) -> ReadAccessSpecification {
    spec_id(oid(o), props)
}

fn spec_id(o: ObjectIdentifier, props: &[PropertyIdentifier]) -> ReadAccessSpecification {
    ReadAccessSpecification {
        object_identifier: o,
        list_of_property_references: props
            .iter()
            .map(|&p| PropertyReference {
                property_identifier: p,
                property_array_index: None,
            })
            .collect(),
    }
}

/// Hands COV notifications to the decoder as changes, by subscriber
/// process id (the device) and object (the point).
async fn dispatch(
    plan: Arc<BacnetSourcePlan>,
    units: Vec<Units>,
    mut rx: tokio::sync::broadcast::Receiver<bacnet_client::client::ReceivedCOVNotification>,
    tx: SyncSender<FieldEv>,
    mut stop: Stop,
    stats: Arc<Stats>,
) {
    let mut points: HashMap<(u32, ObjectIdentifier), (usize, usize)> = HashMap::new();
    for (d, dev) in plan.devices.iter().enumerate() {
        for (i, p) in dev.points.iter().enumerate() {
            points.insert((process_id(d), oid(p.object)), (d, i));
        }
    }
    loop {
        let n = tokio::select! {
            n = rx.recv() => n,
            _ = stop.wait_for(|s| *s) => return,
        };
        let n = match n {
            Ok(n) => n.notification,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => {
                stats.event("bacnet: COV notifications lost (the node fell behind)", k);
                continue;
            }
            Err(_) => return,
        };
        let key = (
            n.subscriber_process_identifier,
            n.monitored_object_identifier,
        );
        let Some(&(d, i)) = points.get(&key) else {
            stats.event("bacnet: COV notifications for no point", 1);
            continue;
        };
        let p = &plan.devices[d].points[i];
        let (mut value, mut q) = (None, Quality::Good);
        for v in &n.list_of_values {
            let x = decoded(&v.value);
            if v.property_identifier == PropertyIdentifier::PRESENT_VALUE {
                value = x.as_ref().and_then(number);
            } else if v.property_identifier == PropertyIdentifier::STATUS_FLAGS {
                if let Some(f) = &x {
                    q = quality(f);
                }
            }
        }
        let Some(v) = value else {
            stats.event(
                "bacnet: COV notifications without a numeric present-value",
                1,
            );
            continue;
        };
        let ev = FieldEv::Changed {
            device: d,
            ts: now_ms(),
            point: i as u32,
            value: v * p.scale + p.offset,
            quality: with_unit(&units[d][i], q),
        };
        if !send(&tx, ev) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(b: u8) -> PropertyValue {
        PropertyValue::BitString {
            unused_bits: 4,
            data: vec![b],
        }
    }

    #[test]
    fn status_flags_give_the_quality() {
        // Bits in order: in-alarm 0x80, fault 0x40, overridden 0x20,
        // out-of-service 0x10 (Clause 20.2.10: bit 0 first).
        assert_eq!(quality(&flags(0)), Quality::Good);
        assert_eq!(quality(&flags(0x80)), Quality::Good);
        assert_eq!(quality(&flags(0x40)), Quality::Bad);
        assert_eq!(quality(&flags(0x20)), Quality::Uncertain);
        assert_eq!(quality(&flags(0x10)), Quality::Uncertain);
        assert_eq!(quality(&flags(0x50)), Quality::Bad);
    }

    #[test]
    fn present_values_are_numbers() {
        assert_eq!(number(&PropertyValue::Real(21.5)), Some(21.5));
        assert_eq!(number(&PropertyValue::Enumerated(1)), Some(1.0));
        assert_eq!(number(&PropertyValue::Unsigned(3)), Some(3.0));
        assert_eq!(number(&PropertyValue::Null), None);
        // The encoding of REAL 21.5 (application tag 4, length 4).
        let raw = [0x44, 0x41, 0xac, 0x00, 0x00];
        assert_eq!(decoded(&raw).as_ref().and_then(number), Some(21.5));
        assert_eq!(
            mac_of("10.0.4.30:47808".parse().unwrap()),
            vec![10, 0, 4, 30, 0xba, 0xc0]
        );
    }
}
