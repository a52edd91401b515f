//! `mqtt_publish` sink: action events (and optionally outcomes and bills) as
//! JSON messages on a topic template such as
//! `plantflow/actions/{site}/{asset}`, QoS 1 by default.
//!
//! Each message is one row version: the row's fields plus `table`,
//! `dataflow` and `revision`. A correction of an action is published again
//! under the same `action_id` with a higher `revision`, so a subscriber keeps
//! the highest revision per id. Publishing runs on a tokio task; the
//! client's bounded request queue slows the encoder thread (never a worker)
//! when the broker is slow, and the sink waits for the broker's
//! acknowledgements of everything it published before the run ends.
//! Actions, outcomes and bills are published ahead of queued aggregates
//! (see [`Queues`]); a full aggregates queue still holds the encoder up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::model::message::{action_json, row_json};
use crate::model::SinkBatch;
use crate::mqtt::conn::{Conn, ConnPlan, Incoming};
use crate::mqtt::topic::TagTemplate;

/// A validated `mqtt_publish` sink.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    pub id: String,
    /// Its table's key in the dataflow (`sinks[1]`), for messages.
    pub key: String,
    pub conn: ConnPlan,
    /// Topic template over row fields (`site`, `asset`, `rule`, `owner`, ...).
    pub topic: TagTemplate,
    pub tables: Vec<String>,
    pub qos: u8,
    pub retain: bool,
    /// One message per row, or the rows of one output batch grouped by topic.
    pub payload: Payload,
    /// Metric names, in config order (aggregates messages name them).
    pub metrics: Vec<String>,
}

/// How rows become messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// One JSON object per row version (the default).
    Row,
    /// The rows of one output batch (one window close, one correction) that
    /// render to the same topic, as one JSON array of the same objects, cut
    /// so that no message exceeds `max_bytes` (a single larger row still goes,
    /// alone). Fewer, larger messages: a 4,000-tag window on one topic is a
    /// handful of publishes instead of 4,000.
    Array { max_bytes: usize },
}

/// `max_message_bytes` when not set.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

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

use crate::model::rfc3339_ms as ms_string;

/// One `aggregates` message: the window's fields, its context, the metrics
/// by name, and `table`, `dataflow`, `revision`. Non-finite numbers are `null`.
struct AggregateMessage<'a> {
    e: &'a crate::model::Enriched,
    revision: i64,
    dataflow: &'a str,
    start_time: Option<String>,
    metrics: &'a [String],
}

impl serde::Serialize for AggregateMessage<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (e, w) = (self.e, &self.e.win);
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("table", "aggregates")?;
        m.serialize_entry("dataflow", self.dataflow)?;
        m.serialize_entry("revision", &self.revision)?;
        m.serialize_entry("tag", &e.asset.tag)?;
        m.serialize_entry("asset", &e.asset.asset)?;
        m.serialize_entry("site", &e.asset.site)?;
        m.serialize_entry("line", &e.asset.line)?;
        m.serialize_entry("window_start", &w.window_start)?;
        m.serialize_entry("window_end", &w.window_end)?;
        m.serialize_entry("window_start_time", &self.start_time)?;
        m.serialize_entry("count", &w.count)?;
        for (k, x) in [
            ("mean", w.mean),
            ("min", w.min),
            ("max", w.max),
            ("first", w.first),
            ("last", w.last),
            ("price_per_kwh", e.price_per_kwh),
        ] {
            m.serialize_entry(k, &x.0)?;
        }
        m.serialize_entry("producing", &e.producing)?;
        m.serialize_entry("in_maintenance", &e.in_maintenance)?;
        for (name, v) in self.metrics.iter().zip(&e.metrics) {
            match v {
                crate::model::Scalar::Num(x) => m.serialize_entry(name, &x.0)?,
                crate::model::Scalar::Bool(b) => m.serialize_entry(name, b)?,
                crate::model::Scalar::Str(t) => m.serialize_entry(name, t)?,
            }
        }
        m.end()
    }
}

/// Turns a sink batch into messages for the tables this sink publishes.
pub fn messages(plan: &PublishPlan, dataflow: &str, batch: &SinkBatch) -> Vec<Outgoing> {
    let mut out = Vec::new();
    each_message(plan, dataflow, batch, |m| out.push(m));
    out
}

/// Hands the batch's messages to `out`. With one message per row, each goes
/// out as it is encoded (the first before the last is encoded); with arrays,
/// a topic's array goes out when it is full, the rest at the end of the
/// batch in the order their topics first appeared.
pub fn each_message(
    plan: &PublishPlan,
    dataflow: &str,
    batch: &SinkBatch,
    mut out: impl FnMut(Outgoing),
) {
    let Payload::Array { max_bytes } = plan.payload else {
        return each_row(plan, dataflow, batch, out);
    };
    // Open arrays by topic, in first-seen order.
    let mut open: Vec<(String, Vec<u8>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    each_row(plan, dataflow, batch, |m| {
        let i = match index.get(&m.topic) {
            Some(i) => *i,
            None => {
                index.insert(m.topic.clone(), open.len());
                open.push((m.topic, vec![b'[']));
                open.len() - 1
            }
        };
        let (topic, buf) = &mut open[i];
        // `buf` holds `[` and the rows so far; this row needs a comma and
        // the closing `]`.
        if buf.len() > 1 && buf.len() + m.payload.len() + 2 > max_bytes {
            buf.push(b']');
            let full = std::mem::replace(buf, vec![b'[']);
            out(Outgoing {
                topic: topic.clone(),
                payload: full,
            });
        }
        if buf.len() > 1 {
            buf.push(b',');
        }
        buf.extend_from_slice(&m.payload);
    });
    for (topic, mut buf) in open {
        if buf.len() > 1 {
            buf.push(b']');
            out(Outgoing {
                topic,
                payload: buf,
            });
        }
    }
}

/// One message per row version.
fn each_row(plan: &PublishPlan, dataflow: &str, batch: &SinkBatch, mut out: impl FnMut(Outgoing)) {
    let want = |t: &str| plan.tables.iter().any(|x| x == t);
    let topic_of = |table: &str, fields: &[(&str, &str)]| {
        let mut vals: Vec<(&str, &str)> = Vec::with_capacity(fields.len() + 2);
        vals.extend_from_slice(fields);
        vals.push(("table", table));
        vals.push(("dataflow", dataflow));
        let topic = plan.topic.render(&vals);
        // MQTT topics must not contain wildcards; replace them in field values.
        if topic.contains(['+', '#']) {
            topic.replace(['+', '#'], "_")
        } else {
            topic
        }
    };
    let mut emit = |table: &str, payload: Vec<u8>, fields: &[(&str, &str)]| {
        out(Outgoing {
            topic: topic_of(table, fields),
            payload,
        });
    };
    match batch {
        // Aggregates are the bulk (one message per tag and window): serialised
        // straight from the row, without an intermediate JSON value.
        SinkBatch::Aggregates(rows) if want("aggregates") => {
            let mut start_text: Option<(i64, Option<String>)> = None;
            for (e, rev) in rows {
                let w = &e.win;
                let start_time = match &start_text {
                    Some((ms, text)) if *ms == w.window_start => text.clone(),
                    _ => {
                        let text = ms_string(w.window_start);
                        start_text = Some((w.window_start, text.clone()));
                        text
                    }
                };
                let msg = AggregateMessage {
                    e,
                    revision: *rev,
                    dataflow,
                    start_time,
                    metrics: &plan.metrics,
                };
                out(Outgoing {
                    topic: topic_of(
                        "aggregates",
                        &[
                            ("site", &e.asset.site),
                            ("line", &e.asset.line),
                            ("asset", &e.asset.asset),
                            ("tag", &e.asset.tag),
                        ],
                    ),
                    payload: serde_json::to_vec(&msg).unwrap_or_default(),
                });
            }
        }
        SinkBatch::Actions(rows) if want("actions") => {
            for (a, rev) in rows {
                let fields = [
                    ("site", a.site.as_str()),
                    ("line", &a.line),
                    ("asset", &a.asset),
                    ("rule", &a.rule),
                    ("owner", &a.owner),
                    ("action_id", &a.action_id),
                    ("status", &a.status),
                ];
                emit("actions", action_json(dataflow, *rev, a), &fields);
            }
        }
        SinkBatch::Outcomes(rows) if want("outcomes") => {
            for (o, rev) in rows {
                let fields = [
                    ("site", o.site.as_str()),
                    ("asset", &o.asset),
                    ("rule", &o.rule),
                    ("action_id", &o.action_id),
                    ("status", &o.verdict),
                ];
                emit("outcomes", row_json("outcomes", dataflow, *rev, o), &fields);
            }
        }
        SinkBatch::Billing(rows) if want("billing") => {
            for (b, rev) in rows {
                emit(
                    "billing",
                    row_json("billing", dataflow, *rev, b),
                    &[("site", &b.site)],
                );
            }
        }
        _ => {}
    }
}

/// The publisher's two queues: actions, outcomes and bills go `urgent`,
/// aggregates (one message per tag and window) go `bulk`. An action raised
/// at a window close is published before that close's aggregates.
pub struct Queues {
    pub urgent: tokio::sync::mpsc::Receiver<Outgoing>,
    pub bulk: tokio::sync::mpsc::Receiver<Outgoing>,
}

impl Queues {
    /// The next message, urgent first; `None` once both queues are closed and empty.
    async fn next(&mut self) -> Option<Outgoing> {
        tokio::select! {
            biased;
            Some(m) = self.urgent.recv() => Some(m),
            Some(m) = self.bulk.recv() => Some(m),
            else => None,
        }
    }
}

/// The client's own request queue: short, so an urgent message waits
/// behind at most this many aggregates (plus those in flight).
const CLIENT_QUEUE: usize = 16;

/// Whether a batch's messages go to the urgent queue (see [`Queues`]).
pub fn is_urgent(batch: &SinkBatch) -> bool {
    !matches!(batch, SinkBatch::Aggregates(_))
}

/// Runs the publisher until both queues close and everything sent is
/// acknowledged (or 10 s pass without the broker acknowledging).
pub async fn run(
    plan: PublishPlan,
    mut rx: Queues,
    stats: Arc<PublishStats>,
) -> Result<(), String> {
    let mut conn = Conn::new(&plan.conn, false, None, CLIENT_QUEUE)
        .map_err(|e| format!("cannot start: {e}"))?;
    let client = conn.client.clone();
    let qos = plan.qos;
    let retain = plan.retain;
    // Publishing from a separate task keeps the event loop polled while the
    // client's request queue is full.
    let st = stats.clone();
    let sender = tokio::spawn(async move {
        while let Some(m) = rx.next().await {
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
                let wait = crate::mqtt::conn::backoff(failures);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::model::{AssetRow, Enriched, Scalar, WindowAgg, F64};
    use serde_json::Value;

    #[test]
    fn urgent_messages_overtake_queued_aggregates_and_nothing_is_lost() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (urgent_tx, urgent) = tokio::sync::mpsc::channel(8);
            let (bulk_tx, bulk) = tokio::sync::mpsc::channel(8);
            let mut q = Queues { urgent, bulk };
            let msg = |t: &str| Outgoing {
                topic: t.to_string(),
                payload: Vec::new(),
            };
            for i in 0..3 {
                bulk_tx.send(msg(&format!("agg/{i}"))).await.unwrap();
            }
            urgent_tx.send(msg("action/0")).await.unwrap();
            assert_eq!(q.next().await.unwrap().topic, "action/0");
            urgent_tx.send(msg("action/1")).await.unwrap();
            drop(urgent_tx);
            drop(bulk_tx);
            let mut rest = Vec::new();
            while let Some(m) = q.next().await {
                rest.push(m.topic);
            }
            assert_eq!(rest, ["action/1", "agg/0", "agg/1", "agg/2"]);
        });
    }

    /// workload_v1 with one extra `mqtt_publish` sink (`sink` is its keys
    /// after `type` and `id`).
    fn load_with_sink(
        sink: &str,
    ) -> Result<crate::dataflow::Dataflow, crate::config::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/workload_v1_small");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/workload_v1.toml"),
        )
        .unwrap()
            + "\n[[sinks]]\ntype = \"mqtt_publish\"\nid = \"live\"\n"
            + sink;
        let df = dir.path().join("df.toml");
        std::fs::write(&df, text).unwrap();
        let env = |k: &str| match k {
            "INPUT_DIR" => Some(fixture.display().to_string()),
            "OUT_DIR" => Some(dir.path().display().to_string()),
            _ => None,
        };
        crate::dataflow::load_with_env(&df, &env)
    }

    fn window(asset: &str, tag: &str, mean: f64) -> Enriched {
        let asset = Arc::new(AssetRow {
            tag: tag.into(),
            asset: asset.into(),
            site: "s".into(),
            line: "s/l".into(),
            kind: "motor".into(),
            standby_kw: F64(1.0),
            extra: Box::default(),
        });
        Enriched {
            tag: 0,
            win: WindowAgg {
                window_start: 60_000,
                window_end: 120_000,
                count: 60,
                mean: F64(mean),
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
            metrics: smallvec::smallvec![
                Scalar::Num(F64(0.5)),
                Scalar::Num(F64(0.1)),
                Scalar::Num(F64(0.5)),
            ],
        }
    }

    #[test]
    fn aggregates_are_one_message_per_window_with_named_metrics() {
        let plan = load_with_sink(
            "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"p/{table}/{asset}/{tag}\"\ntables = [\"aggregates\"]\n",
        )
        .expect("valid dataflow");
        let p = &plan.publish[0];
        assert_eq!(p.metrics, ["energy_kwh", "cost", "waste_kwh"]);
        assert_eq!(p.payload, Payload::Row);
        let e = window("s/l/m1", "s/l/m1/power_kw", 30.0);
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

    #[test]
    fn action_messages_carry_the_row_and_rfc3339_times() {
        let plan = load_with_sink(
            "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"p/{table}/{owner}/{status}\"\ntables = [\"actions\"]\n",
        )
        .expect("valid dataflow");
        let row = crate::model::ActionRow {
            action_id: "a1".into(),
            rule: "idle".into(),
            site: "s".into(),
            line: "l".into(),
            asset: "m1".into(),
            owner: "operations".into(),
            action_type: "operational_change".into(),
            value_category: "energy_cost".into(),
            value: F64(2.5),
            severity: "low".into(),
            // 2026-01-05T00:00:00Z and 01:00:30.250Z, by hand: 1,767,225,600 s is 2026-01-01.
            period_start: 1_767_571_200_000,
            period_end: 1_767_574_800_000,
            status: "open".into(),
            evidence: "{\"findings\":1}".into(),
            category: "energy".into(),
            findings: 1,
            status_at: 1_767_574_830_250,
            status_by: "plantflow".into(),
            status_note: String::new(),
        };
        let out = messages(&plan.publish[0], "df", &SinkBatch::Actions(vec![(row, 3)]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "p/actions/operations/open");
        let v: Value = serde_json::from_slice(&out[0].payload).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 19 + 5, "{keys:?}");
        assert_eq!(v["table"], "actions");
        assert_eq!(v["dataflow"], "df");
        assert_eq!(v["revision"], 3);
        assert_eq!(v["value"], 2.5);
        assert_eq!(v["evidence"], "{\"findings\":1}");
        assert_eq!(v["period_start_time"], "2026-01-05T00:00:00.000Z");
        assert_eq!(v["status_time"], "2026-01-05T01:00:30.250Z");
    }

    #[test]
    fn array_payload_groups_a_batch_by_topic_and_cuts_at_the_size_limit() {
        let plan = load_with_sink(
            "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"p/{table}/{asset}\"\ntables = [\"aggregates\"]\npayload = \"array\"\nmax_message_bytes = 4096\n",
        )
        .expect("valid dataflow");
        let p = &plan.publish[0];
        assert_eq!(p.payload, Payload::Array { max_bytes: 4096 });
        // 100 windows of two assets, interleaved.
        let rows: Vec<(Enriched, i64)> = (0..100)
            .map(|i| {
                let a = if i % 2 == 0 { "s/l/m1" } else { "s/l/m2" };
                (window(a, &format!("{a}/t{i}"), i as f64), i % 3)
            })
            .collect();
        let batch = SinkBatch::Aggregates(rows);
        let mut per_row = p.clone();
        per_row.payload = Payload::Row;
        let singles = messages(&per_row, "df", &batch);
        assert_eq!(singles.len(), 100);
        let row_len = singles[0].payload.len();
        let arrays = messages(p, "df", &batch);
        // Every message fits, and holds as many rows as fit.
        for m in &arrays {
            assert!(m.payload.len() <= 4096, "{} bytes", m.payload.len());
        }
        for topic in ["p/aggregates/s/l/m1", "p/aggregates/s/l/m2"] {
            let want: Vec<Value> = singles
                .iter()
                .filter(|m| m.topic == topic)
                .map(|m| serde_json::from_slice(&m.payload).unwrap())
                .collect();
            let mine: Vec<&Outgoing> = arrays.iter().filter(|m| m.topic == topic).collect();
            let got: Vec<Value> = mine
                .iter()
                .flat_map(|m| {
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    v.as_array().expect("a JSON array").clone()
                })
                .collect();
            // The same objects, in the same order, as one message per row gives.
            assert_eq!(got, want, "{topic}");
            // All but the last array are full: one more row would not fit.
            for m in &mine[..mine.len() - 1] {
                assert!(m.payload.len() + row_len + 1 > 4096);
            }
            assert!(
                mine.len() >= 2,
                "50 rows of {row_len} bytes need several messages"
            );
        }
        // Topics leave in the order they first appeared.
        assert_eq!(arrays.last().unwrap().topic, "p/aggregates/s/l/m2");
        // A row larger than the limit still goes, alone.
        let mut tiny = p.clone();
        tiny.payload = Payload::Array { max_bytes: 10 };
        let each = messages(&tiny, "df", &batch);
        assert_eq!(each.len(), 100);
        assert!(each
            .iter()
            .all(|m| m.payload.starts_with(b"[{") && m.payload.ends_with(b"}]")));
    }

    #[test]
    fn payload_keys_are_checked() {
        let err = load_with_sink("url = \"mqtt://127.0.0.1:1883\"\npayload = \"arrays\"\n")
            .expect_err("unknown payload")
            .render();
        assert!(err.contains("unknown payload `arrays`"), "{err}");
        assert!(err.contains("key `sinks[1].payload`"), "{err}");
        assert!(err.contains("did you mean `array`?"), "{err}");
        let err = load_with_sink(
            "url = \"mqtt://127.0.0.1:1883\"\npayload = \"array\"\nmax_message_bytes = 100\n",
        )
        .expect_err("too small")
        .render();
        assert!(err.contains("100 is out of range"), "{err}");
        assert!(err.contains("key `sinks[1].max_message_bytes`"), "{err}");
        let err = load_with_sink("url = \"mqtt://127.0.0.1:1883\"\nmax_message_bytes = 4096\n")
            .expect_err("only with arrays")
            .render();
        assert!(
            err.contains("applies only with `payload = \"array\"`"),
            "{err}"
        );
    }
}
