//! The tag-quality view: every tag configured or seen, with what the node
//! has seen of it and its status (`GET /api/v1/tags`, the `tag_quality`
//! table). Statuses are judged at the latest event time any source has
//! read (on a node with live sources, plus the time since it advanced).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::TagQualityPlan;
use crate::ingest::watch::{ReportedUnit, TagStat};
use crate::ingest::{TagRegistry, TagWatch};
use crate::model::{AssetRow, Scalar, SinkBatch, Stamped, TagQualityRow};
use crate::sources::context::ContextStore;
use crate::stats::Stats;

/// Everything the view is built from.
pub struct TagQuality {
    pub watch: Arc<TagWatch>,
    pub tags: Arc<TagRegistry>,
    pub store: Arc<ContextStore>,
    pub plan: TagQualityPlan,
    /// The assets table's `unit` column among its extra columns, if any.
    pub unit: Option<usize>,
    /// The interval assumed for a tag with one sample (the window size).
    pub fallback_interval_ms: i64,
    pub stats: Arc<Stats>,
    /// Live sources: judge at the clock when it is later than the data.
    pub live: bool,
    cache: Mutex<Option<(Instant, Arc<Vec<TagQualityRow>>)>>,
    /// The latest event time read, and when it last advanced.
    advanced: Mutex<(i64, Instant)>,
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A tag's status and why, judged at `at` (see `schemas/tag_quality.md`).
pub fn judge(
    seen: Option<&TagStat>,
    mapped: bool,
    (tag, kind): (&str, &str),
    plan: &TagQualityPlan,
    at: i64,
    fallback_interval_ms: i64,
) -> (&'static str, String) {
    let Some(s) = seen.filter(|s| s.samples > 0) else {
        return ("missing", "no sample since the node started".into());
    };
    if !mapped {
        return (
            "unmapped",
            "samples come, the assets table does not know the tag".into(),
        );
    }
    let interval = interval(s).unwrap_or(fallback_interval_ms).max(1);
    let age = at - s.last_ts;
    if age as f64 > plan.stale_after * interval as f64 {
        return (
            "stale",
            format!(
                "no sample for {} ({} × its usual interval of {})",
                human(age),
                plan.stale_after,
                human(interval)
            ),
        );
    }
    let v = s.last_value;
    if let Some(r) = plan
        .ranges
        .iter()
        .find(|r| r.matches(tag, kind) && !(r.min..=r.max).contains(&v))
    {
        return (
            "out_of_range",
            format!("last value {v} outside [{}, {}]", r.min, r.max),
        );
    }
    let still = s.last_ts - s.changed_at;
    if plan.flatline_after_ms > 0 && still >= plan.flatline_after_ms {
        return ("flatline", format!("unchanged at {v} for {}", human(still)));
    }
    ("ok", String::new())
}

/// What a device reports of a tag's unit, in its row: the unit where the
/// assets table gives none; `unit_mismatch` where it gives another (the
/// table's unit matches by the device's symbol or name, in any case), unless
/// an earlier status applies (`schemas/tag_quality.md`).
fn reported(r: &mut TagQualityRow, unit: Option<&ReportedUnit>) {
    let Some(u) = unit else { return };
    let shown = if u.symbol.is_empty() {
        &u.name
    } else {
        &u.symbol
    };
    if r.unit.is_empty() {
        r.unit = shown.clone();
        return;
    }
    let same = |x: &str| !x.is_empty() && x.eq_ignore_ascii_case(r.unit.trim());
    if !same(&u.symbol) && !same(&u.name) && matches!(r.status, "out_of_range" | "flatline" | "ok")
    {
        r.status = "unit_mismatch";
        r.detail = format!(
            "its device reports {} ({}); the assets table says {}",
            u.name, shown, r.unit
        );
    }
}

/// The mean interval between a tag's samples (two or more).
fn interval(s: &TagStat) -> Option<i64> {
    (s.samples >= 2).then(|| (s.last_ts - s.first_ts) / (s.samples as i64 - 1))
}

use crate::http::TAG_STATUSES as STATUSES;

impl TagQuality {
    /// The view of a run's tags, with a fresh [`TagWatch`] for its sources.
    pub fn new(
        tags: &Arc<TagRegistry>,
        store: &Arc<ContextStore>,
        plan: &crate::config::Plan,
        stats: &Arc<Stats>,
        live: bool,
    ) -> Arc<TagQuality> {
        let unit = plan
            .context
            .asset_extra
            .iter()
            .position(|(name, _)| name == "unit");
        Arc::new(TagQuality {
            watch: Arc::default(),
            tags: tags.clone(),
            store: store.clone(),
            plan: plan.tag_quality.clone(),
            unit,
            fallback_interval_ms: plan.window.size_ms,
            stats: stats.clone(),
            live,
            cache: Mutex::default(),
            advanced: Mutex::new((0, Instant::now())),
        })
    }

    /// The time statuses are judged at: the latest event time any source
    /// has read; on a node with live sources, plus the time since it last
    /// advanced (a feed that stops altogether makes its tags stale, and a
    /// feed of old data, a demo's or a backfill's, is judged by its own time).
    pub fn at(&self) -> i64 {
        let data = self
            .stats
            .sources()
            .values()
            .filter_map(|s| s.max_ts)
            .max()
            .unwrap_or(0);
        let mut last = self.advanced.lock().unwrap_or_else(|p| p.into_inner());
        if data > last.0 {
            *last = (data, Instant::now());
        }
        if self.live && data > 0 {
            data + last.1.elapsed().as_millis() as i64
        } else {
            data
        }
    }

    /// Every tag's row, most urgent status first; at most `max_age` old.
    pub fn rows(&self, max_age: Duration) -> Arc<Vec<TagQualityRow>> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((when, rows)) = c.as_ref() {
            if when.elapsed() <= max_age {
                return rows.clone();
            }
        }
        let rows = Arc::new(self.build());
        *c = Some((Instant::now(), rows.clone()));
        rows
    }

    fn build(&self) -> Vec<TagQualityRow> {
        let at = self.at();
        let view = self.tags.view();
        let mut seen: HashMap<&str, TagStat> = HashMap::new();
        self.watch.known(|id, s| {
            if s.samples > 0 && (id as usize) < view.keys().len() {
                let tag: &str = view.key(id);
                seen.insert(tag, *s);
            }
        });
        let assets = self.store.assets();
        let units = self.watch.reported_units();
        let row = |tag: &str, a: Option<&Arc<AssetRow>>, s: Option<&TagStat>| {
            let mut r = self.row(tag, a, s, at);
            reported(&mut r, units.get(tag));
            r
        };
        let mut out = Vec::with_capacity(assets.len());
        let mut mapped: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for a in &assets {
            let tag: &str = &a.tag;
            mapped.insert(tag);
            out.push(row(tag, Some(a), seen.get(tag)));
        }
        // Known once (an earlier assets table), not now.
        for (tag, s) in &seen {
            if !mapped.contains(tag) {
                out.push(row(tag, None, Some(s)));
            }
        }
        let (unmapped, _) = self.watch.unmapped();
        for (tag, s) in &unmapped {
            out.push(row(tag, None, Some(s)));
        }
        let rank = |s: &str| STATUSES.iter().position(|x| *x == s).unwrap_or(0);
        out.sort_by(|a, b| {
            rank(a.status)
                .cmp(&rank(b.status))
                .then_with(|| a.tag.cmp(&b.tag))
        });
        out
    }

    fn row(
        &self,
        tag: &str,
        a: Option<&Arc<AssetRow>>,
        s: Option<&TagStat>,
        at: i64,
    ) -> TagQualityRow {
        let kind = a.map(|a| a.kind.as_ref()).unwrap_or("");
        let (status, detail) = judge(
            s,
            a.is_some(),
            (tag, kind),
            &self.plan,
            at,
            self.fallback_interval_ms,
        );
        let s = s.filter(|s| s.samples > 0);
        let unit = match (a, self.unit) {
            (Some(a), Some(i)) => match a.extra.get(i) {
                Some(Scalar::Str(u)) => u.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let field = |f: fn(&AssetRow) -> &str| a.map(|a| f(a).to_string()).unwrap_or_default();
        TagQualityRow {
            snapshot_at: at,
            tag: tag.to_string(),
            site: field(|a| &a.site),
            line: field(|a| &a.line),
            asset: field(|a| &a.asset),
            kind: kind.to_string(),
            unit,
            status,
            detail,
            samples: s.map_or(0, |s| s.samples),
            first_ts: s.map(|s| s.first_ts),
            last_ts: s.map(|s| s.last_ts),
            last_value: s.map(|s| s.last_value),
            min: s.map(|s| s.min),
            max: s.map(|s| s.max),
            interval_ms: s.and_then(interval),
            unchanged_since: s.map(|s| s.changed_at),
        }
    }

    /// Sends a snapshot to the lake each time event time passes a multiple
    /// of `every`, until `stop`.
    pub fn snapshots(&self, sink: &std::sync::mpsc::Sender<Stamped>, stop: &AtomicBool) {
        let every = self.plan.every_ms.max(1);
        let mut next: Option<i64> = None;
        while !stop.load(Relaxed) {
            super::nap(stop, Duration::from_millis(250));
            let at = self.at();
            if at <= 0 {
                continue;
            }
            match next {
                None => next = Some((at.div_euclid(every) + 1) * every),
                Some(n) if at >= n => {
                    self.snapshot(sink);
                    next = Some((at.div_euclid(every) + 1) * every);
                }
                Some(_) => {}
            }
        }
    }

    /// Sends one snapshot to the lake now.
    pub fn snapshot(&self, sink: &std::sync::mpsc::Sender<Stamped>) {
        let rows = self.rows(Duration::ZERO);
        if !rows.is_empty() {
            let _ = sink.send(Stamped::now(SinkBatch::TagQuality(rows.to_vec())));
        }
    }
}

impl crate::http::TagRows for TagQuality {
    fn rows(&self, max_age: Duration) -> Arc<Vec<TagQualityRow>> {
        TagQuality::rows(self, max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(samples: u64, first: i64, last: i64, v: f64, changed: i64) -> TagStat {
        TagStat {
            samples,
            first_ts: first,
            last_ts: last,
            last_value: v,
            changed_at: changed,
            min: v,
            max: v,
        }
    }

    #[test]
    fn a_reported_unit_fills_the_row_or_flags_a_mismatch() {
        let row = |unit: &str, status: &'static str| TagQualityRow {
            unit: unit.into(),
            status,
            ..Default::default()
        };
        let kw = ReportedUnit {
            symbol: "kW".into(),
            name: "kilowatts".into(),
        };
        let mut r = row("", "ok");
        reported(&mut r, Some(&kw));
        assert_eq!((r.unit.as_str(), r.status), ("kW", "ok"));
        for same in ["kW", "KW", "kilowatts", " kw "] {
            let mut r = row(same, "ok");
            reported(&mut r, Some(&kw));
            assert_eq!(r.status, "ok", "{same}");
        }
        let mut r = row("W", "flatline");
        reported(&mut r, Some(&kw));
        assert_eq!(r.status, "unit_mismatch");
        assert_eq!(
            r.detail,
            "its device reports kilowatts (kW); the assets table says W"
        );
        // An earlier status stands.
        let mut r = row("W", "stale");
        reported(&mut r, Some(&kw));
        assert_eq!(r.status, "stale");
    }

    #[test]
    fn statuses_in_their_order() {
        let mut plan = TagQualityPlan {
            flatline_after_ms: 3_600_000,
            ..Default::default()
        };
        plan.ranges.push(crate::config::RangePlan {
            tags: Some(globset::Glob::new("*.kw").unwrap().compile_matcher()),
            kind: None,
            min: 0.0,
            max: 100.0,
        });
        let j = |s: Option<&TagStat>, mapped: bool, tag: &str, at: i64| {
            judge(s, mapped, (tag, "meter"), &plan, at, 60_000).0
        };
        // 11 samples a minute apart: interval 60 s, stale after 5 min.
        let fresh = stat(11, 0, 600_000, 5.0, 300_000);
        assert_eq!(j(None, true, "a.kw", 0), "missing");
        assert_eq!(j(Some(&fresh), false, "a.kw", 600_000), "unmapped");
        assert_eq!(j(Some(&fresh), true, "a.kw", 600_000 + 300_000), "ok");
        assert_eq!(j(Some(&fresh), true, "a.kw", 600_000 + 300_001), "stale");
        let high = stat(11, 0, 600_000, 150.0, 300_000);
        assert_eq!(j(Some(&high), true, "a.kw", 600_000), "out_of_range");
        assert_eq!(
            j(Some(&high), true, "a.temp", 600_000),
            "ok",
            "the range is for *.kw"
        );
        let flat = stat(121, 0, 7_200_000, 5.0, 3_600_000);
        assert_eq!(j(Some(&flat), true, "a.kw", 7_200_000), "flatline");
        let not_yet = stat(121, 0, 7_200_000, 5.0, 3_600_001);
        assert_eq!(j(Some(&not_yet), true, "a.kw", 7_200_000), "ok");
    }
}
