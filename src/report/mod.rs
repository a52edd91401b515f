//! `report`: a self-contained HTML report built from a lake directory.
//!
//! The lake is the product's durable output; this module reads it back
//! (latest revision of every key, see [`latest_actions`] and
//! [`latest_outcomes`]) and renders one page a plant manager can open from
//! a mail attachment or print: KPIs, value at stake by owner, actions by
//! status, the full action list, and for every verified (or refused)
//! outcome the before/after energy chart with the baseline model. Charts are
//! inline SVG drawn with plotters, styles are inline CSS, and the page loads
//! nothing at view time (no scripts, fonts or images).
//!
//! - [`lake`]: Parquet reading, by column name, tolerant of missing tables.
//! - `charts`: the plotters SVG charts.
//! - `html`: the page.
//! - `fmt`: escaping and number/time formatting.
//!
//! The demo's end-of-run summary reuses [`latest_actions`] and [`latest_outcomes`].

use std::path::Path;

pub mod backtest;
mod charts;
mod fmt;
mod html;

/// Reading the lake back (it lives beside the writer, in the sink).
pub use crate::sinks::parquet::read as lake;
pub use lake::{
    latest_actions, latest_billing, latest_buckets, latest_outcomes, ActionView, BillView,
    BucketView, OutcomeView,
};

/// A rendered report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The whole page.
    pub html: String,
    /// Actions in the lake (latest revisions, every status).
    pub actions: usize,
    /// Actions whose latest status is `verified`.
    pub verified: usize,
    /// Charts drawn (each an inline `<svg>` in a `<figure class="chart">`).
    pub charts: usize,
}

/// Reads the lake and renders the report.
pub fn build(lake: &Path) -> Result<Report, String> {
    lake::check_lake(lake)?;
    let data = html::Data {
        actions: latest_actions(lake)?,
        outcomes: latest_outcomes(lake)?,
        buckets: latest_buckets(lake)?,
        billing: latest_billing(lake)?,
    };
    // Absolute, so the DuckDB queries in the footer work from anywhere.
    let shown = std::fs::canonicalize(lake).unwrap_or_else(|_| lake.to_path_buf());
    let page = html::render(&shown, &data, chrono::Utc::now().timestamp_millis());
    Ok(Report {
        html: page.html,
        actions: data.actions.len(),
        verified: page.verified,
        charts: page.charts,
    })
}

/// [`build`]s the report and writes it to `out` atomically (`out` + `.tmp`,
/// then rename), so a browser or mailer never sees half a page.
pub fn write(lake: &Path, out: &Path) -> Result<Report, String> {
    let report = build(lake)?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, report.html.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "cannot rename {} to {}: {e}",
            tmp.display(),
            out.display()
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;

    use super::*;

    const H: i64 = 3_600_000;
    /// 2026-01-05T00:00:00Z
    const T0: i64 = 1_767_571_200_000;

    /// A lake directory under the system temp dir, removed on drop.
    struct TempLake(PathBuf);

    impl TempLake {
        fn new(tag: &str) -> TempLake {
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "plantflow-report-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).expect("create temp lake");
            TempLake(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `cols` as `<lake>/<table>/<partition>/<file>`.
        fn write(&self, table: &str, partition: &str, file: &str, cols: Vec<(&str, ArrayRef)>) {
            let dir = self.0.join(table).join(partition);
            std::fs::create_dir_all(&dir).expect("create partition");
            let fields: Vec<Field> = cols
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect();
            let schema = Arc::new(Schema::new(fields));
            let batch =
                RecordBatch::try_new(schema.clone(), cols.into_iter().map(|c| c.1).collect())
                    .expect("test batch");
            let f = std::fs::File::create(dir.join(file)).expect("create parquet file");
            let mut w = ArrowWriter::try_new(f, schema, None).expect("parquet writer");
            w.write(&batch).expect("write batch");
            w.close().expect("close parquet file");
        }
    }

    impl Drop for TempLake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn s<const N: usize>(v: [&str; N]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }
    fn f<const N: usize>(v: [f64; N]) -> ArrayRef {
        Arc::new(Float64Array::from(v.to_vec()))
    }
    fn fo<const N: usize>(v: [Option<f64>; N]) -> ArrayRef {
        Arc::new(Float64Array::from(v.to_vec()))
    }
    fn i<const N: usize>(v: [i64; N]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }
    fn t<const N: usize>(v: [i64; N]) -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(v.to_vec()).with_timezone("UTC"))
    }
    fn b<const N: usize>(v: [bool; N]) -> ArrayRef {
        Arc::new(BooleanArray::from(v.to_vec()))
    }

    /// One `actions` row.
    struct A<'a> {
        id: &'a str,
        owner: &'a str,
        asset: &'a str,
        rule: &'a str,
        value: f64,
        status: &'a str,
        revision: i64,
        evidence: &'a str,
    }

    fn actions_cols(rows: &[A]) -> Vec<(&'static str, ArrayRef)> {
        let strs = |g: &dyn Fn(&A) -> String| -> ArrayRef {
            Arc::new(StringArray::from(rows.iter().map(g).collect::<Vec<_>>()))
        };
        let n = rows.len();
        vec![
            ("action_id", strs(&|a| a.id.into())),
            ("dataflow", strs(&|_| "plant_a".into())),
            ("rule", strs(&|a| a.rule.into())),
            ("site", strs(&|_| "s1".into())),
            ("line", strs(&|_| "l1".into())),
            ("asset", strs(&|a| a.asset.into())),
            ("owner", strs(&|a| a.owner.into())),
            ("action_type", strs(&|_| "maintenance_work".into())),
            ("value_category", strs(&|_| "energy_cost".into())),
            (
                "value",
                Arc::new(Float64Array::from(
                    rows.iter().map(|a| a.value).collect::<Vec<_>>(),
                )),
            ),
            ("currency", strs(&|_| "EUR".into())),
            ("severity", strs(&|_| "high".into())),
            (
                "period_start",
                Arc::new(TimestampMillisecondArray::from(vec![T0 + 2 * H; n]).with_timezone("UTC")),
            ),
            (
                "period_end",
                Arc::new(TimestampMillisecondArray::from(vec![T0 + 8 * H; n]).with_timezone("UTC")),
            ),
            ("status", strs(&|a| a.status.into())),
            ("evidence", strs(&|a| a.evidence.into())),
            (
                "revision",
                Arc::new(Int64Array::from(
                    rows.iter().map(|a| a.revision).collect::<Vec<_>>(),
                )),
            ),
            ("category", strs(&|_| "energy".into())),
            ("findings", Arc::new(Int64Array::from(vec![3; n]))),
            (
                "status_at",
                Arc::new(TimestampMillisecondArray::from(vec![T0 + 9 * H; n]).with_timezone("UTC")),
            ),
            ("status_by", strs(&|_| "plantflow".into())),
            ("status_note", strs(&|_| "".into())),
        ]
    }

    /// One `outcomes` row: (action, rule, asset, verdict, final, avoided kWh, avoided cost, reason, revision).
    type O<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        bool,
        f64,
        f64,
        &'a str,
        i64,
    );

    fn outcome_cols(o: O) -> Vec<(&'static str, ArrayRef)> {
        let (id, rule, asset, verdict, fin, kwh, cost, reason, rev) = o;
        vec![
            ("action_id", s([id])),
            ("dataflow", s(["plant_a"])),
            ("rule", s([rule])),
            ("site", s(["s1"])),
            ("asset", s([asset])),
            ("baseline_start", t([T0])),
            ("baseline_end", t([T0 + 8 * H])),
            ("reporting_start", t([T0 + 10 * H])),
            ("reporting_end", t([T0 + 16 * H])),
            ("model", s(["kwh = 12.000000 + 0.250000 * units"])),
            ("n_baseline", i([8])),
            ("n_reporting", i([6])),
            ("r2", fo([Some(0.95)])),
            ("cv_rmse", fo([Some(0.08)])),
            ("nmbe", fo([Some(0.001)])),
            ("baseline_kwh", fo([Some(1600.0)])),
            ("actual_kwh", f([1600.0 - kwh])),
            ("avoided_kwh", fo([Some(kwh)])),
            ("avoided_cost", fo([Some(cost)])),
            ("currency", s(["EUR"])),
            ("fractional_savings", fo([Some(kwh / 1600.0)])),
            ("fsu_68", fo([Some(0.1)])),
            ("fsu_90", fo([None])),
            ("verdict", s([verdict])),
            ("reason", s([reason])),
            ("final", b([fin])),
            ("computed_at", t([T0 + 17 * H])),
            ("revision", i([rev])),
        ]
    }

    /// `outcome_buckets` rows of one action and revision: baseline hours
    /// `base`, reporting hours `rep` (offsets from `start`), measured from `kwh`.
    fn bucket_cols(
        id: &str,
        revision: i64,
        start: i64,
        base: std::ops::Range<i64>,
        rep: std::ops::Range<i64>,
        kwh: f64,
    ) -> Vec<(&'static str, ArrayRef)> {
        let hours: Vec<(i64, &str)> = base
            .map(|h| (h, "baseline"))
            .chain(rep.map(|h| (h, "reporting")))
            .collect();
        let n = hours.len();
        let strs = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; n])) };
        let ts = |d: i64| -> ArrayRef {
            Arc::new(
                TimestampMillisecondArray::from(
                    hours
                        .iter()
                        .map(|(h, _)| start + h * H + d)
                        .collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            )
        };
        let measured: Vec<f64> = hours
            .iter()
            .map(|(h, p)| kwh + (*h % 3) as f64 * 10.0 - if *p == "reporting" { 40.0 } else { 0.0 })
            .collect();
        let predicted: Vec<f64> = hours
            .iter()
            .map(|(h, _)| kwh + (*h % 3) as f64 * 10.0 + 1.0)
            .collect();
        vec![
            ("action_id", strs(id)),
            ("dataflow", strs("plant_a")),
            ("rule", strs("compressor_leak")),
            ("site", strs("s1")),
            ("asset", strs("comp1")),
            ("bucket_start", ts(0)),
            ("bucket_end", ts(H)),
            (
                "period",
                Arc::new(StringArray::from(
                    hours.iter().map(|h| h.1).collect::<Vec<_>>(),
                )),
            ),
            ("units", Arc::new(Float64Array::from(vec![100.0; n]))),
            ("measured_kwh", Arc::new(Float64Array::from(measured))),
            ("predicted_kwh", Arc::new(Float64Array::from(predicted))),
            ("cost", Arc::new(Float64Array::from(vec![20.0; n]))),
            ("revision", Arc::new(Int64Array::from(vec![revision; n]))),
        ]
    }

    const SCRIPT: &str = "<script>alert(1)</script>";

    /// Five actions (one with two revisions), four outcomes (one with two
    /// revisions), buckets of two revisions for one of them; no billing table.
    fn sample_lake() -> TempLake {
        let lake = TempLake::new("sample");
        let ev = |m: &str| {
            format!(r#"{{"condition":"x > 1","findings":3,"measures":{m},"history":[]}}"#)
        };
        let old = ev(r#"{"kw":12.34567}"#);
        let new = ev(&format!(r#"{{"kw":12.34567,"note":"{SCRIPT}"}}"#));
        let plain = ev(r#"{"kw":0.0012345}"#);
        let a = |id, owner, asset, value, status, revision, evidence| A {
            id,
            owner,
            asset,
            rule: "compressor_leak",
            value,
            status,
            revision,
            evidence,
        };
        lake.write(
            "actions",
            "date=2026-01-05",
            "part-1-00001.parquet",
            actions_cols(&[
                a("a1", "maintenance", "comp1", 987.65, "open", 0, &old),
                a("a2", "operations", "pump2", 1000.4, "open", 0, &plain),
                a("a3", "energy", "", 250.35, "acknowledged", 0, &plain),
                a("a4", "maintenance", "comp9", 10.0, "rejected", 0, &plain),
                a(
                    "a5",
                    "engineering",
                    "oven3",
                    500.0,
                    "not_verified",
                    0,
                    &plain,
                ),
            ]),
        );
        lake.write(
            "actions",
            "date=2026-01-06",
            "part-1-00002.parquet",
            actions_cols(&[a("a1", "maintenance", "comp1", 1234.5, "verified", 1, &new)]),
        );
        // Writer leftovers and strays that must be ignored (reading them would fail).
        let p = lake.path().join("actions/date=2026-01-05");
        std::fs::write(p.join(".part-1-00003.parquet.inprogress"), b"half a file").expect("write");
        std::fs::write(p.join(".part-1-00004.parquet"), b"hidden").expect("write");
        std::fs::write(p.join("notes.txt"), b"not a table").expect("write");

        lake.write(
            "outcomes",
            "date=2026-01-05",
            "part-1-00001.parquet",
            outcome_cols((
                "a1",
                "compressor_leak",
                "comp1",
                "pending",
                false,
                1.0,
                0.1,
                "reporting period open",
                0,
            )),
        );
        lake.write(
            "outcomes",
            "date=2026-01-05",
            "part-1-00002.parquet",
            outcome_cols((
                "a1",
                "compressor_leak",
                "comp1",
                "verified",
                true,
                321.5,
                48.23,
                "",
                1,
            )),
        );
        lake.write(
            "outcomes",
            "date=2026-01-05",
            "part-1-00003.parquet",
            outcome_cols((
                "a5",
                "oven_idle",
                "oven3",
                "not_verified",
                true,
                99.0,
                15.0,
                "FSU68 62.0 % ≥ 50 %",
                0,
            )),
        );
        lake.write(
            "outcomes",
            "date=2026-01-05",
            "part-1-00004.parquet",
            outcome_cols((
                "a2",
                "pump_cavitation",
                "pump2",
                "pending",
                false,
                0.0,
                0.0,
                "",
                0,
            )),
        );
        // a1: a stale series (revision 0, a month earlier) and the current one (revision 1).
        lake.write(
            "outcome_buckets",
            "date=2025-12-01",
            "part-1-00001.parquet",
            bucket_cols("a1", 0, T0 - 35 * 24 * H, 0..3, 5..7, 777.0),
        );
        lake.write(
            "outcome_buckets",
            "date=2026-01-05",
            "part-1-00002.parquet",
            bucket_cols("a1", 1, T0, 0..8, 10..16, 200.0),
        );
        lake.write(
            "outcome_buckets",
            "date=2026-01-05",
            "part-1-00003.parquet",
            bucket_cols("a5", 0, T0, 0..4, 10..14, 80.0),
        );
        lake
    }

    /// The `<figure>` of one outcome chart.
    fn figure_of<'h>(html: &'h str, action: &str) -> &'h str {
        let at = html
            .find(&format!("data-action=\"{action}\""))
            .expect("outcome figure");
        let end = html[at..].find("</figure>").expect("figure end");
        &html[at..at + end]
    }

    #[test]
    fn report_latest_revisions() {
        let lake = sample_lake();
        let actions = latest_actions(lake.path()).expect("actions");
        assert_eq!(actions.len(), 5);
        // Sorted by value, the latest revision of a1 first.
        assert_eq!(actions[0].action_id, "a1");
        assert_eq!(actions[0].revision, 1);
        assert_eq!(actions[0].status, "verified");
        assert_eq!(actions[0].value, 1234.5);
        assert_eq!(actions[0].period_start, T0 + 2 * H);
        let outcomes = latest_outcomes(lake.path()).expect("outcomes");
        assert_eq!(outcomes.len(), 3);
        let a1 = outcomes
            .iter()
            .find(|o| o.action_id == "a1")
            .expect("a1 outcome");
        assert_eq!(
            (a1.revision, a1.verdict.as_str(), a1.is_final),
            (1, "verified", true)
        );
        assert_eq!(a1.fsu_90, None);
        let buckets = latest_buckets(lake.path()).expect("buckets");
        let a1 = &buckets["a1"];
        assert_eq!(a1.len(), 14);
        assert!(a1.iter().all(|b| b.revision == 1 && b.bucket_start >= T0));
        assert!(a1.windows(2).all(|w| w[0].bucket_start < w[1].bucket_start));
        assert_eq!(buckets["a5"].len(), 8);
        assert!(latest_billing(lake.path()).expect("billing").is_empty());
    }

    #[test]
    fn report_renders_sample_lake() {
        let lake = sample_lake();
        let r = build(lake.path()).expect("report");
        let html = &r.html;
        assert_eq!((r.actions, r.verified, r.charts), (5, 1, 4));

        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains("<title>plantflow report</title>"));
        assert!(html.contains("Dataflow: <strong>plant_a</strong>"));
        assert!(html.contains("2026-01-05 02:00 – 2026-01-05 08:00 UTC"));

        // One figure, SVG and caption per chart, of the expected kinds.
        assert_eq!(html.matches("<figure class=\"chart\"").count(), 4);
        assert_eq!(html.matches("<svg ").count(), 4);
        assert_eq!(html.matches("<figcaption>").count(), 4);
        assert!(html.contains("data-chart=\"value-by-owner\""));
        assert!(html.contains("data-chart=\"actions-by-status\""));
        assert_eq!(html.matches("data-chart=\"outcome\"").count(), 2);
        // pending a2 has no series, so no chart.
        assert!(!html.contains("data-action=\"a2\""));

        // Text without a font backend: plotters writes SVG <text> elements.
        assert!(html.contains("value at stake (EUR)\n</text>"));
        assert!(html.contains("time (UTC)\n</text>"));
        assert!(html.contains("kWh per hour\n</text>"));
        assert!(html.contains("comp1: energy before and after, with the baseline model\n</text>"));

        // Only the latest revision of a1: its value and status, never the superseded value.
        assert!(html.contains("1,234.50 EUR"));
        assert!(!html.contains("987.65"));
        let row_at = html.find("<tr id=\"action-a1\">").expect("a1 row");
        let row = &html[row_at..row_at + html[row_at..].find("</tr>").expect("row end")];
        assert!(row.contains("s-verified\""), "{row}");
        assert!(row.contains("kw=12.3"), "{row}");
        assert!(row.contains("2026-01-05 02:00"), "{row}");

        // Only the latest series of a1: 14 buckets from 2026-01-05, labelled by chrono.
        let fig = figure_of(html, "a1");
        assert!(fig.contains("data-buckets=\"14\""), "{}", &fig[..80]);
        assert!(fig.contains("01-05 06:00"));
        assert!(fig.contains("found &amp; fixed"));
        assert!(fig.contains("baseline model prediction"));
        assert!(
            !html.contains("12-01"),
            "stale revision 0 buckets were drawn"
        );
        assert!(figure_of(html, "a5").contains("data-buckets=\"8\""));

        // Lake strings are escaped; nothing can run or load.
        assert!(html.contains("note=&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("href="));
        assert!(!html.contains("url("));
        assert!(!html.contains("@import"));
        assert_eq!(
            html.matches("http").count(),
            html.matches("http://www.w3.org/2000/svg").count(),
            "only the SVG namespace may mention http"
        );

        // KPIs: at stake = a2 1000.40 + a3 250.35 (a1 is verified, a4 rejected, a5 not verified).
        assert!(html.contains("<div class=\"value\">1,250.75 EUR</div>"));
        // Verified avoided energy: only a1's verified outcome, not a5's not_verified 99 kWh.
        assert!(html.contains("<div class=\"value\">321.5 kWh</div>"));
        assert!(html.contains("48.23 EUR avoided cost"));
        // Counts by status.
        assert!(html.contains(">not verified</span></td><td class=\"num\">1</td>"));
        assert!(html.contains(">open</span></td><td class=\"num\">1</td>"));

        // Outcome stats line.
        assert!(html.contains("R² 0.950"));
        assert!(html.contains("CV(RMSE) 8.0 %"));
        assert!(html.contains("FSU68 62.0 % ≥ 50 %"));

        // The DuckDB footer filters to the latest revision in a CTE, then aggregates.
        let q = html.find("WITH latest AS (").expect("duckdb query");
        let qualify =
            html[q..].find("QUALIFY revision = max(revision) OVER (PARTITION BY action_id))");
        let group = html[q..].find("GROUP BY ALL");
        assert!(qualify.is_some() && group.is_some() && qualify < group);
    }

    #[test]
    fn report_write_is_atomic() {
        let lake = sample_lake();
        let out = lake.path().join("report.html");
        let r = write(lake.path(), &out).expect("write report");
        let on_disk = std::fs::read_to_string(&out).expect("read report");
        assert_eq!(on_disk, r.html);
        assert!(!lake.path().join("report.html.tmp").exists());
    }

    #[test]
    fn report_empty_lake_renders() {
        let lake = TempLake::new("empty");
        std::fs::create_dir_all(lake.path().join("actions")).expect("mkdir");
        let r = build(lake.path()).expect("report");
        assert_eq!((r.actions, r.verified, r.charts), (0, 0, 0));
        assert!(r.html.contains("No actions in this lake yet"));
        assert!(r.html.contains("No verification outcomes yet"));
        assert!(r.html.contains("<div class=\"value\">0.00</div>"));
        assert!(r.html.ends_with("</html>\n"));
    }

    #[test]
    fn report_missing_lake_is_an_error() {
        let lake = TempLake::new("missing");
        let dir = lake.path().join("nowhere");
        let e = build(&dir).expect_err("no lake");
        assert!(e.contains("no plantflow lake at"), "{e}");
        assert!(e.contains(&dir.display().to_string()), "{e}");
        // A directory without actions/ is not a lake either.
        let e = build(lake.path()).expect_err("no actions table");
        assert!(e.contains("(no actions/ table)"), "{e}");
    }

    #[test]
    fn report_bad_files_are_errors_not_panics() {
        let lake = TempLake::new("bad");
        let dir = lake.path().join("actions/date=2026-01-05");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("part-bad.parquet"), b"PAR1 but not really").expect("write");
        let e = build(lake.path()).expect_err("corrupt file");
        assert!(e.contains("part-bad.parquet"), "{e}");
        std::fs::remove_file(dir.join("part-bad.parquet")).expect("rm");

        // A required column missing, and one of the wrong type.
        let mut cols = actions_cols(&[A {
            id: "a1",
            owner: "o",
            asset: "x",
            rule: "r",
            value: 1.0,
            status: "open",
            revision: 0,
            evidence: "{}",
        }]);
        cols.retain(|c| c.0 != "revision");
        lake.write("actions", "date=2026-01-05", "part-a.parquet", cols);
        let e = build(lake.path()).expect_err("no revision column");
        assert!(
            e.contains("no `revision` column") && e.contains("part-a.parquet"),
            "{e}"
        );
        std::fs::remove_file(dir.join("part-a.parquet")).expect("rm");

        lake.write(
            "actions",
            "date=2026-01-05",
            "part-b.parquet",
            vec![("action_id", s(["a1"])), ("value", s(["lots"]))],
        );
        let e = build(lake.path()).expect_err("wrong types");
        assert!(e.contains("part-b.parquet"), "{e}");
    }

    /// The hand-built test tables use the writer's column names and types.
    #[test]
    fn report_test_lake_matches_writer_schema() {
        use crate::sinks::parquet::{actions_schema, outcome_buckets_schema, outcomes_schema};
        let a = A {
            id: "a",
            owner: "o",
            asset: "x",
            rule: "r",
            value: 1.0,
            status: "open",
            revision: 0,
            evidence: "{}",
        };
        let tables = [
            (actions_schema(), actions_cols(&[a])),
            (
                outcomes_schema(),
                outcome_cols(("a", "r", "x", "verified", true, 1.0, 1.0, "", 0)),
            ),
            (
                outcome_buckets_schema(),
                bucket_cols("a", 0, T0, 0..1, 1..2, 1.0),
            ),
        ];
        for (schema, cols) in tables {
            for (name, col) in cols {
                let field = schema.field_with_name(name).expect("writer has the column");
                assert_eq!(field.data_type(), col.data_type(), "column {name}");
            }
        }
    }
}
