//! `mqtt_publish` sink: action events (and optionally outcomes and bills) as
//! JSON messages on a topic template such as
//! `plantflow/actions/{site}/{asset}`, QoS 1 by default.
//!
//! Each message is one row version: the row's fields plus `table`,
//! `dataflow` and `revision`. A correction of an action is published again
//! under the same `action_id` with a higher `revision`, so a subscriber keeps
//! the highest revision per id. Publishing runs on a tokio task; the
//! client's bounded request queue slows the forwarder (never a worker) when
//! the broker is slow, and the sink waits for the broker's acknowledgements
//! of everything it published before the run ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::SinkBatch;
use crate::sources::mqtt::conn::{Conn, ConnPlan, Incoming};
use crate::sources::mqtt::topic::TagTemplate;

/// A validated `mqtt_publish` sink.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    pub id: String,
    pub conn: ConnPlan,
    /// Topic template over row fields (`site`, `asset`, `rule`, `owner`, ...).
    pub topic: TagTemplate,
    pub tables: Vec<String>,
    pub qos: u8,
    pub retain: bool,
    /// Metric names, in config order (aggregates messages name them).
    pub metrics: Vec<String>,
}

/// One message to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Counters of the publish sink.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub queued: AtomicU64,
    pub acked: AtomicU64,
}

fn ms_text(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Turns a sink batch into messages for the tables this sink publishes.
pub fn messages(plan: &PublishPlan, dataflow: &str, batch: &SinkBatch) -> Vec<Outgoing> {
    let want = |t: &str| plan.tables.iter().any(|x| x == t);
    let mut out = Vec::new();
    let mut emit = |table: &str, mut v: Value, fields: &[(&str, &str)], revision: i64| {
        let mut vals: HashMap<&str, String> =
            fields.iter().map(|(k, v)| (*k, v.to_string())).collect();
        vals.insert("table", table.to_string());
        vals.insert("dataflow", dataflow.to_string());
        if let Value::Object(m) = &mut v {
            m.insert("table".into(), json!(table));
            m.insert("dataflow".into(), json!(dataflow));
            m.insert("revision".into(), json!(revision));
        }
        // MQTT topics must not contain wildcards; replace them in field values.
        let topic = plan.topic.render_map(&vals).replace(['+', '#'], "_");
        out.push(Outgoing {
            topic,
            payload: serde_json::to_vec(&v).unwrap_or_default(),
        });
    };
    match batch {
        SinkBatch::Aggregates(rows) if want("aggregates") => {
            for (e, rev) in rows {
                let w = &e.win;
                let mut m = serde_json::Map::new();
                m.insert("tag".into(), json!(e.asset.tag));
                m.insert("asset".into(), json!(e.asset.asset));
                m.insert("site".into(), json!(e.asset.site));
                m.insert("line".into(), json!(e.asset.line));
                m.insert("window_start".into(), json!(w.window_start));
                m.insert("window_end".into(), json!(w.window_end));
                m.insert("window_start_time".into(), ms_text(w.window_start));
                m.insert("count".into(), json!(w.count));
                for (k, x) in [
                    ("mean", w.mean),
                    ("min", w.min),
                    ("max", w.max),
                    ("first", w.first),
                    ("last", w.last),
                    ("price_per_kwh", e.price_per_kwh),
                ] {
                    m.insert(k.into(), json!(x.0));
                }
                m.insert("producing".into(), json!(e.producing));
                m.insert("in_maintenance".into(), json!(e.in_maintenance));
                for (name, v) in plan.metrics.iter().zip(&e.metrics) {
                    let v = match v {
                        crate::model::Scalar::Num(x) => json!(x.0),
                        crate::model::Scalar::Bool(b) => json!(b),
                        crate::model::Scalar::Str(s) => json!(s),
                    };
                    m.insert(name.clone(), v);
                }
                emit(
                    "aggregates",
                    Value::Object(m),
                    &[
                        ("site", &e.asset.site),
                        ("line", &e.asset.line),
                        ("asset", &e.asset.asset),
                        ("tag", &e.asset.tag),
                    ],
                    *rev,
                );
            }
        }
        SinkBatch::Actions(rows) if want("actions") => {
            for (a, rev) in rows {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("period_start_time".into(), ms_text(a.period_start));
                    m.insert("status_time".into(), ms_text(a.status_at));
                }
                emit(
                    "actions",
                    v,
                    &[
                        ("site", &a.site),
                        ("line", &a.line),
                        ("asset", &a.asset),
                        ("rule", &a.rule),
                        ("owner", &a.owner),
                        ("action_id", &a.action_id),
                        ("status", &a.status),
                    ],
                    *rev,
                );
            }
        }
        SinkBatch::Outcomes(rows) if want("outcomes") => {
            for (o, rev) in rows {
                let v = serde_json::to_value(o).unwrap_or(Value::Null);
                emit(
                    "outcomes",
                    v,
                    &[
                        ("site", &o.site),
                        ("asset", &o.asset),
                        ("rule", &o.rule),
                        ("action_id", &o.action_id),
                        ("status", &o.verdict),
                    ],
                    *rev,
                );
            }
        }
        SinkBatch::Billing(rows) if want("billing") => {
            for (b, rev) in rows {
                let v = serde_json::to_value(b).unwrap_or(Value::Null);
                emit("billing", v, &[("site", &b.site)], *rev);
            }
        }
        _ => {}
    }
    out
}

/// Runs the publisher until `rx` closes and everything sent is acknowledged
/// (or 10 s pass without the broker acknowledging).
pub async fn run(
    plan: PublishPlan,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
    stats: Arc<PublishStats>,
) {
    let mut conn = match Conn::new(&plan.conn, false, None) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(sink = %plan.id, "mqtt_publish cannot start: {e}");
            while rx.recv().await.is_some() {}
            return;
        }
    };
    let client = conn.client.clone();
    let qos = plan.qos;
    let retain = plan.retain;
    // Publishing from a separate task keeps the event loop polled while the
    // client's request queue is full.
    let st = stats.clone();
    let sender = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if client
                .publish(&m.topic, qos, retain, m.payload)
                .await
                .is_err()
            {
                break;
            }
            st.queued.fetch_add(1, Relaxed);
        }
    });
    let mut failures = 0u32;
    let mut sender_done = false;
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let mut last_acked = 0;
    loop {
        let acked = conn.acked();
        stats.acked.store(acked, Relaxed);
        if sender_done {
            if qos == 0 || acked >= stats.queued.load(Relaxed) {
                break;
            }
            if acked != last_acked {
                last_acked = acked;
                waiting_since = None;
            }
            let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                tracing::warn!(sink = %plan.id, queued = stats.queued.load(Relaxed), acked, "mqtt_publish: the broker did not acknowledge everything before shutdown");
                break;
            }
        }
        match tokio::time::timeout(Duration::from_millis(200), conn.poll()).await {
            Ok(Incoming::Error(e)) => {
                let wait = crate::sources::mqtt::conn::backoff(failures);
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(sink = %plan.id, "mqtt_publish connection lost ({e}); retrying in {wait:?}");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
            Ok(Incoming::Connected { .. }) => failures = 0,
            _ => {}
        }
        if !sender_done && sender.is_finished() {
            sender_done = true;
        }
    }
    conn.client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.poll()).await;
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::model::{AssetRow, Enriched, Scalar, WindowAgg, F64};

    #[test]
    fn aggregates_are_one_message_per_window_with_named_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workload_v1_small");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1.toml"),
        )
        .unwrap()
            + "\n[[sinks]]\ntype = \"mqtt_publish\"\nid = \"live\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic = \"p/{table}/{asset}/{tag}\"\ntables = [\"aggregates\"]\n";
        let df = dir.path().join("df.toml");
        std::fs::write(&df, text).unwrap();
        let env = |k: &str| match k {
            "INPUT_DIR" => Some(fixture.display().to_string()),
            "OUT_DIR" => Some(dir.path().display().to_string()),
            _ => None,
        };
        let plan = crate::config::load_with_env(&df, &env).expect("valid dataflow");
        let p = &plan.publish[0];
        assert_eq!(p.metrics, ["energy_kwh", "cost", "waste_kwh"]);
        let asset = Arc::new(AssetRow {
            tag: "s/l/m1/power_kw".into(),
            asset: "s/l/m1".into(),
            site: "s".into(),
            line: "s/l".into(),
            kind: "motor".into(),
            standby_kw: F64(1.0),
            extra: vec![],
        });
        let e = Enriched {
            tag: 0,
            win: WindowAgg {
                window_start: 60_000,
                window_end: 120_000,
                count: 60,
                mean: F64(30.0),
                min: F64(29.0),
                max: F64(31.0),
                first: F64(29.5),
                last: F64(30.5),
            },
            asset,
            tariff_key: 0,
            price_per_kwh: F64(0.2),
            producing: false,
            in_maintenance: false,
            metrics: vec![
                Scalar::Num(F64(0.5)),
                Scalar::Num(F64(0.1)),
                Scalar::Num(F64(0.5)),
            ],
        };
        let batch = SinkBatch::Aggregates(vec![(e, 2)]);
        let out = messages(p, "workload_v1", &batch);
        assert_eq!(out.len(), 1);
        // '/' in field values stays: the template's fields are path segments.
        assert_eq!(out[0].topic, "p/aggregates/s/l/m1/s/l/m1/power_kw");
        let v: Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(v["tag"], "s/l/m1/power_kw");
        assert_eq!(v["window_end"], 120_000);
        assert_eq!(v["count"], 60);
        assert_eq!(v["mean"], 30.0);
        assert_eq!(v["energy_kwh"], 0.5);
        assert_eq!(v["cost"], 0.1);
        assert_eq!(v["producing"], false);
        assert_eq!(v["revision"], 2);
        assert_eq!(v["table"], "aggregates");
        // Actions-only sinks ignore aggregates.
        let mut actions_only = p.clone();
        actions_only.tables = vec!["actions".into()];
        assert!(messages(&actions_only, "x", &batch).is_empty());
    }
}
