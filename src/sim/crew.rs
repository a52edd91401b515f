//! The demo's simulated crew: it hears the dataflow's action events over
//! MQTT, acknowledges new actions, fixes the compressor and cleans the
//! chiller, appending to the lifecycle's `status.jsonl` as a person would.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::edge::host_port;
use super::plant::Fixes;

/// One action event as published by the dataflow.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ActionEvent {
    #[serde(default)]
    pub table: String,
    #[serde(default)]
    pub action_id: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub line: String,
    #[serde(default)]
    pub asset: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub action_type: String,
    #[serde(default)]
    pub value: f64,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub revision: i64,
    #[serde(default)]
    pub evidence: String,
    #[serde(default)]
    pub verdict: String,
    #[serde(default)]
    pub avoided_kwh: Option<f64>,
    #[serde(default)]
    pub avoided_cost: Option<f64>,
    #[serde(default, alias = "final")]
    pub is_final: bool,
}

/// Subscribes to the dataflow's action events and forwards them.
pub fn subscribe_actions(url: &str, tx: Sender<ActionEvent>) -> Result<(), String> {
    let (h, p) = host_port(url);
    let mut o = MqttOptions::new("plantflow-demo-crew", h, p);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 100);
    client
        .subscribe("plantflow/actions/#", QoS::AtLeastOnce)
        .map_err(|e| e.to_string())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("plantflow-demo-crew".into())
        .spawn(move || {
            let _keep = client;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(a) = serde_json::from_slice::<ActionEvent>(&p.payload) {
                            if tx.send(a).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    wait_ready(ready_rx)
}

pub fn wait_ready(rx: Receiver<()>) -> Result<(), String> {
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the demo's action subscriber did not connect to the embedded broker".into())
}

/// The rule whose action the crew leaves open, for the board's user.
pub const LEFT_OPEN: &str = "baseload_creep";

/// The simulated crew: acknowledges new actions (all but [`LEFT_OPEN`]'s),
/// fixes the compressor and cleans the chiller.
pub struct Crew {
    status_file: PathBuf,
    currency: String,
    pub fixes: Fixes,
    /// (due sim time, action_id, status, by, note)
    todo: Vec<(i64, String, &'static str, &'static str, &'static str)>,
    /// Rule of each action the crew will fix.
    rules: std::collections::HashMap<String, String>,
    seen: std::collections::HashSet<String>,
    pub opened: usize,
}

impl Crew {
    pub fn new(status_file: PathBuf, currency: String) -> Crew {
        Crew {
            status_file,
            currency,
            fixes: Fixes::default(),
            todo: Vec::new(),
            rules: Default::default(),
            seen: Default::default(),
            opened: 0,
        }
    }

    /// Takes an event in; returns the line to print, if any.
    pub fn hear(&mut self, ev: &ActionEvent, now: i64) -> Option<String> {
        let when = chrono::DateTime::from_timestamp_millis(now)
            .map(|d| d.format("%a %H:%M").to_string())
            .unwrap_or_default();
        if ev.table == "outcomes" {
            if !ev.is_final || !self.seen.insert(format!("outcome:{}", ev.action_id)) {
                return None;
            }
            return Some(format!(
                "{when}  OUTCOME {:<12} {} · avoided {:.0} kWh, {:.2} {}",
                ev.verdict,
                ev.action_id,
                ev.avoided_kwh.unwrap_or(0.0),
                ev.avoided_cost.unwrap_or(0.0),
                self.currency
            ));
        }
        let key = format!("{}:{}", ev.action_id, ev.status);
        if !self.seen.insert(key) {
            return None;
        }
        let place = place(&ev.site, &ev.line, &ev.asset);
        match ev.status.as_str() {
            "open" => {
                self.opened += 1;
                // One action is left open for whoever watches the board.
                let left = ev.rule == LEFT_OPEN;
                let (status, by, note, delay) = match ev.rule.as_str() {
                    "compressor_off_hours" => (
                        "acknowledged",
                        "ops-shift-lead",
                        "auto-stop schedule requested",
                        crate::sim::plant::HOUR,
                    ),
                    _ => (
                        "acknowledged",
                        "owner",
                        "looking into it",
                        2 * crate::sim::plant::HOUR,
                    ),
                };
                if !left {
                    self.todo
                        .push((now + delay, ev.action_id.clone(), status, by, note));
                }
                let fix = match ev.rule.as_str() {
                    "compressor_off_hours" => Some((
                        8,
                        "maintenance",
                        "auto-stop schedule installed on the compressor controller",
                    )),
                    "chiller_kw_per_ton" => Some((
                        12,
                        "maintenance",
                        "condenser tubes cleaned, chilled-water setpoint reset",
                    )),
                    _ => None,
                };
                if let Some((hours, by, note)) = fix {
                    self.todo.push((
                        now + hours * crate::sim::plant::HOUR,
                        ev.action_id.clone(),
                        "done",
                        by,
                        note,
                    ));
                    self.rules.insert(ev.action_id.clone(), ev.rule.clone());
                }
                Some(format!(
                    "{when}  OPEN  {:<11} {:<18} {:>9.2} {}  {:<20} {}  {}",
                    ev.owner,
                    ev.action_type,
                    ev.value,
                    self.currency,
                    place,
                    ev.rule,
                    evidence_line(&ev.evidence)
                ))
            }
            "done" | "verified" | "not_verified" | "rejected" => Some(format!(
                "{when}  {:<5} {:<11} {:<18} {:>9.2} {}  {:<20} {}  (rev {})",
                ev.status.to_uppercase(),
                ev.owner,
                ev.action_type,
                ev.value,
                self.currency,
                place,
                ev.rule,
                ev.revision
            )),
            _ => None,
        }
    }

    /// Carries out what is due at `now`.
    pub fn act(&mut self, now: i64) -> Result<(), String> {
        let (due, later): (Vec<_>, Vec<_>) = self.todo.drain(..).partition(|d| d.0 <= now);
        self.todo = later;
        if due.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.status_file)
            .map_err(|e| format!("cannot append to {}: {e}", self.status_file.display()))?;
        for (at, id, status, by, note) in due {
            if status == "done" {
                match self.rules.get(&id).map(String::as_str) {
                    Some("compressor_off_hours") => self.fixes.compressor_auto_stop = Some(now),
                    Some("chiller_kw_per_ton") => self.fixes.chiller_cleaned = Some(now),
                    _ => {}
                }
            }
            let line = serde_json::json!({
                "action_id": id, "status": status, "at": now.max(at), "by": by, "note": note
            });
            writeln!(f, "{line}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// `site/line/asset`, without the empty parts (site-level actions have no asset).
pub fn place(site: &str, line: &str, asset: &str) -> String {
    [site, line, asset]
        .into_iter()
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The latest measures of an action's evidence as `k=v`, short.
pub fn evidence_line(evidence: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(evidence) else {
        return String::new();
    };
    let Some(m) = v.get("measures").and_then(|m| m.as_object()) else {
        return String::new();
    };
    m.iter()
        .filter_map(|(k, v)| v.as_f64().map(|x| format!("{k}={x:.2}")))
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}
