//! `/metrics`: the run's counters (and the board's open actions) as
//! OpenMetrics text, built at each scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::board::Board;
use crate::stats::Stats;

fn counter(n: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(n);
    c
}

fn gauge(n: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(n).unwrap_or(i64::MAX));
    g
}

type Labelled<M> = Family<Vec<(String, String)>, M>;

/// A gauge of seconds (fractional) by label.
type Seconds = Labelled<Gauge<f64, std::sync::atomic::AtomicU64>>;

fn labelled<M: Default + Clone>(
    label: &str,
    values: impl IntoIterator<Item = (String, M)>,
    set: impl Fn(&M, M),
) -> Labelled<M>
where
    Labelled<M>: Default,
{
    let f = Labelled::<M>::default();
    for (k, v) in values {
        set(&f.get_or_create(&vec![(label.to_string(), k)]), v);
    }
    f
}

/// The run's counters as OpenMetrics text.
pub fn render(
    st: &Stats,
    surface: Option<(&Board, &dyn super::TagRows)>,
) -> Result<String, std::fmt::Error> {
    let g = Stats::get;
    let mut r = Registry::with_prefix("plantflow");
    for (name, help, v) in [
        (
            "samples_read",
            "Samples read by every source",
            g(&st.rows_read),
        ),
        (
            "samples_accepted",
            "Samples handed to the engine",
            g(&st.rows_accepted),
        ),
        (
            "samples_bad_quality",
            "Samples dropped by the quality policy",
            g(&st.dropped_quality),
        ),
        (
            "samples_late",
            "Samples after their window closed (corrections)",
            g(&st.late_rows),
        ),
        ("windows", "Windows closed and emitted", g(&st.windows)),
        (
            "window_corrections",
            "Corrected window revisions emitted",
            g(&st.corrections),
        ),
    ] {
        r.register(name, help, counter(v));
    }
    register_sources(&mut r, st);
    let dead = st.dead_letters().into_iter().map(|(k, v)| (k, counter(v)));
    r.register(
        "dead_letters",
        "Dead-letter rows, by reason",
        labelled("reason", dead, |c: &Counter, v: Counter| {
            c.inc_by(v.get());
        }),
    );
    let events = st.events().into_iter().map(|(k, v)| (k, counter(v)));
    r.register(
        "source_events",
        "Events of sources and of the node (gaps, stalls, checkpoints, holds), by kind",
        labelled("event", events, |c: &Counter, v: Counter| {
            c.inc_by(v.get());
        }),
    );
    let up = st
        .connected()
        .into_iter()
        .map(|(k, v)| (k, gauge(u64::from(v))));
    r.register(
        "source_connected",
        "1 while a live source's connection (MQTT broker, OPC UA session) is up",
        labelled("source", up, |g: &Gauge, v: Gauge| {
            g.set(v.get());
        }),
    );
    let again = st.reconnects().into_iter().map(|(k, v)| (k, counter(v)));
    r.register(
        "source_reconnects",
        "Times a live source's connection came up again after its first",
        labelled("source", again, |c: &Counter, v: Counter| {
            c.inc_by(v.get());
        }),
    );
    let items = st
        .levels()
        .into_iter()
        .filter(|((what, _), _)| *what == crate::stats::OPCUA_MONITORED_ITEMS)
        .map(|((_, source), v)| (source, gauge(v)));
    r.register(
        "opcua_monitored_items",
        "Monitored items of an OPC UA source's current session",
        labelled("source", items, |g: &Gauge, v: Gauge| {
            g.set(v.get());
        }),
    );
    register_outputs(&mut r, st);
    if let Some((b, tags)) = surface {
        register_board(&mut r, b);
        let rows = tags.rows(std::time::Duration::from_secs(10));
        let by = super::TAG_STATUSES.iter().map(|st| {
            let n = rows.iter().filter(|r| r.status == *st).count();
            (st.to_string(), gauge(n as u64))
        });
        r.register(
            "tags",
            "Tags configured or seen, by data-quality status (GET /api/v1/tags names them)",
            labelled("status", by, |g: &Gauge, v: Gauge| {
                g.set(v.get());
            }),
        );
    }
    r.register_with_unit(
        "sink_queue",
        "Engine output (estimated) waiting for the Parquet writer",
        Unit::Bytes,
        gauge(g(&st.sink_queued_bytes)),
    );
    register_checkpoints(&mut r, st);
    if let Some(b) = crate::stats::heap_in_use() {
        r.register_with_unit(
            "memory_in_use",
            "Memory the process's allocations hold (what `[memory] max` limits)",
            Unit::Bytes,
            gauge(b),
        );
    }
    if let Some(b) = crate::stats::resident() {
        r.register_with_unit(
            "process_resident_memory",
            "The process's resident set",
            Unit::Bytes,
            gauge(b),
        );
    }
    let mut out = String::new();
    encode(&mut out, &r)?;
    Ok(out)
}

/// Checkpoints: how many, their time in all, the latest one's time and size.
fn register_checkpoints(r: &mut Registry, st: &Stats) {
    let n = Stats::get(&st.checkpoints);
    if n == 0 {
        return;
    }
    let secs = |us: u64| {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(us as f64 / 1e6);
        g
    };
    r.register(
        "checkpoints",
        "Checkpoints of the node's state written",
        counter(n),
    );
    let total =
        prometheus_client::metrics::counter::Counter::<f64, std::sync::atomic::AtomicU64>::default(
        );
    total.inc_by(Stats::get(&st.checkpoint_us_total) as f64 / 1e6);
    r.register_with_unit(
        "checkpoint_duration",
        "Time spent writing checkpoints, in all (with plantflow_checkpoints_total: the mean)",
        Unit::Seconds,
        total,
    );
    r.register_with_unit(
        "checkpoint_last_duration",
        "Time the latest checkpoint took to write",
        Unit::Seconds,
        secs(Stats::get(&st.checkpoint_last_us)),
    );
    r.register_with_unit(
        "checkpoint_last_size",
        "Size of the latest checkpoint",
        Unit::Bytes,
        gauge(Stats::get(&st.checkpoint_last_bytes)),
    );
}

/// Per source: samples read, the latest event time read and its lag.
fn register_sources(r: &mut Registry, st: &Stats) {
    let sources = st.sources();
    let read = sources.iter().map(|(k, v)| (k.clone(), counter(v.samples)));
    r.register(
        "source_samples_read",
        "Samples read, by source",
        labelled("source", read, |c: &Counter, v: Counter| {
            c.inc_by(v.get());
        }),
    );
    let bytes = sources.iter().map(|(k, v)| (k.clone(), counter(v.bytes)));
    r.register_with_unit(
        "source_read",
        "Bytes read, by source: MQTT topics and payloads, a CSV file's bytes (not counted: Parquet files, OPC UA)",
        Unit::Bytes,
        labelled("source", bytes, |c: &Counter, v: Counter| {
            c.inc_by(v.get());
        }),
    );
    let now = crate::model::now_ms();
    let (latest, lag) = (Seconds::default(), Seconds::default());
    for (id, v) in &sources {
        if let Some(ts) = v.max_ts {
            let l = vec![("source".to_string(), id.clone())];
            latest.get_or_create(&l).set(ts as f64 / 1000.0);
            lag.get_or_create(&l).set((now - ts) as f64 / 1000.0);
        }
    }
    r.register_with_unit(
        "source_event_time",
        "The latest event time a source has read (Unix time)",
        Unit::Seconds,
        latest,
    );
    r.register_with_unit(
        "source_lag",
        "How far the latest event time a source has read lies behind the clock (a replay of old data lags by its age)",
        Unit::Seconds,
        lag,
    );
}

/// What went out: actions by owner and type, the lake's commits by table.
fn register_outputs(r: &mut Registry, st: &Stats) {
    let actions = st.actions();
    let kinds = |pick: fn(&(u64, f64)) -> f64| {
        let f =
            Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for ((owner, kind), v) in &actions {
            let labels = vec![
                ("owner".to_string(), owner.clone()),
                ("action_type".to_string(), kind.clone()),
            ];
            f.get_or_create(&labels).set(pick(v));
        }
        f
    };
    r.register(
        "actions",
        "Actions (the latest version of each; withdrawn ones left out), by owner and action type",
        kinds(|v| v.0 as f64),
    );
    r.register(
        "actions_value",
        "Value at stake of those actions (the dataflow's currency), by owner and action type",
        kinds(|v| v.1),
    );
    let verdicts = st.outcomes().into_iter().map(|(k, v)| (k, gauge(v)));
    r.register(
        "outcomes",
        "Verification outcomes (the latest version of each), by verdict",
        labelled("verdict", verdicts, |g: &Gauge, v: Gauge| {
            g.set(v.get());
        }),
    );
    let lake = st.lake();
    for (name, help, pick) in [
        (
            "lake_files",
            "Parquet files committed to the lake, by table",
            0,
        ),
        ("lake_rows", "Rows committed to the lake, by table", 1),
        (
            "lake_bytes",
            "Bytes of Parquet committed to the lake, by table",
            2,
        ),
    ] {
        let values = lake.iter().map(|(t, c)| {
            let v = [c.files, c.rows, c.bytes][pick];
            (t.clone(), counter(v))
        });
        r.register(
            name,
            help,
            labelled("table", values, |c: &Counter, v: Counter| {
                c.inc_by(v.get());
            }),
        );
    }
}

/// The board's open actions (open or acknowledged) by owner and severity,
/// and their value at stake by owner.
fn register_board(r: &mut Registry, b: &Board) {
    let open = Family::<Vec<(String, String)>, Gauge>::default();
    let value =
        Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for ((owner, severity), (n, v)) in b.open_by_owner() {
        let labels = vec![
            ("owner".to_string(), owner.clone()),
            ("severity".to_string(), severity),
        ];
        open.get_or_create(&labels).set(n as i64);
        value
            .get_or_create(&vec![("owner".to_string(), owner)])
            .inc_by(v);
    }
    r.register(
        "actions_open",
        "Actions open or acknowledged now, by owner and severity",
        open,
    );
    r.register(
        "actions_open_value",
        "Value at stake of the actions open or acknowledged now (the dataflow's currency), by owner",
        value,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn metrics_carry_the_counters_with_their_labels() {
        let st = Stats::default();
        st.rows_read.store(7, Relaxed);
        st.dead_letter("unknown tag");
        st.dead_letter("unknown tag");
        st.set_connected("plc", true);
        st.set_connected("broker", false);
        st.set_connected("broker", true);
        st.set_connected("broker", false);
        st.set_connected("broker", true);
        st.checkpoint_written(std::time::Duration::from_millis(250), 4096);
        st.set_level(crate::stats::OPCUA_MONITORED_ITEMS, "plc", 300);
        st.checkpoint_written(std::time::Duration::from_millis(500), 8192);
        let text = render(&st, None).unwrap();
        for line in [
            "plantflow_samples_read_total 7",
            "plantflow_dead_letters_total{reason=\"unknown tag\"} 2",
            "plantflow_source_connected{source=\"plc\"} 1",
            "plantflow_source_connected{source=\"broker\"} 1",
            "plantflow_source_reconnects_total{source=\"broker\"} 1",
            "plantflow_source_reconnects_total{source=\"plc\"} 0",
            "plantflow_checkpoints_total 2",
            "plantflow_opcua_monitored_items{source=\"plc\"} 300",
            "plantflow_checkpoint_duration_seconds_total 0.75",
            "plantflow_checkpoint_last_duration_seconds 0.5",
            "plantflow_checkpoint_last_size_bytes 8192",
            "# TYPE plantflow_sink_queue_bytes gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
