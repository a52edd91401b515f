//! The value layer end to end: samples in, actions / billing / outcomes out.
//!
//! Expected numbers are the public value vectors (`tests/fixtures/value_vectors.md`,
//! PV1–PV3) or hand-computed from the constant loads each test writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const PLANTFLOW: &str = env!("CARGO_BIN_EXE_plantflow");
/// 2026-01-05 00:00 UTC, a Monday.
pub(crate) const T0: i64 = 1_767_571_200_000;
pub(crate) const H: i64 = 3_600_000;
pub(crate) const DAY: i64 = 24 * H;

fn rel(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1e-9),
        "{what}: got {got}, want {want}"
    );
}

/// Writes a dataflow copy with `${VAR}` defaults replaced, and runs it in-process.
fn run_with(
    name: &str,
    input: &Path,
    out: &Path,
    vars: &[(&str, &str)],
) -> plantflow::run::RunSummary {
    let mut text = std::fs::read_to_string(dataflow(name)).unwrap();
    for (k, v) in vars {
        let start = text
            .find(&format!("${{{k}:-"))
            .unwrap_or_else(|| panic!("{k} in {name}"));
        let end = start + text[start..].find('}').unwrap();
        text.replace_range(start..=end, v);
    }
    let df = input.join(name);
    std::fs::write(&df, text).unwrap();
    run(&df, input, out, 1)
}

/// `samples.csv` with one sample per minute (mid-minute) of `kw(minute)` for each tag.
fn minute_samples(
    tags: &[&str],
    minutes: std::ops::Range<i64>,
    kw: impl Fn(&str, i64) -> f64,
) -> String {
    let mut s = String::from("ts,tag,value,quality\n");
    for m in minutes {
        for t in tags {
            s.push_str(&format!(
                "{},{t},{},0\n",
                T0 + m * 60_000 + 30_000,
                kw(t, m)
            ));
        }
    }
    s
}

pub(crate) fn write(dir: &Path, files: &[(&str, String)]) {
    for (n, c) in files {
        std::fs::write(dir.join(n), c).unwrap();
    }
}

fn f(r: &HashMap<String, serde_json::Value>, k: &str) -> f64 {
    r[k].as_f64().unwrap_or_else(|| panic!("{k} = {}", r[k]))
}

const ONE_METER: &str =
    "tag,asset,site,line,kind,standby_kw\nm/main/power_kw,m/main,m,m/l1,meter,0\n";
const PV1_TARIFF: &str = "start_hour,end_hour,price_per_kwh\n0,13,0.12\n13,19,0.30\n19,24,0.12\n";

// ---------------------------------------------------------------------------
// PV1: time-of-use energy + 15-minute demand charge, value of shaving the peak,
// and the in-interval projection rule (R7).

#[test]
fn pv1_billing_and_demand_peak_rule() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let kw = |_: &str, m: i64| match m {
        900..=914 => 240.0, // 15:00–15:15
        180..=194 => 180.0, // 03:00–03:15
        _ => 100.0,
    };
    write(
        input.path(),
        &[
            ("assets.csv", ONE_METER.into()),
            ("tariff.csv", PV1_TARIFF.into()),
            (
                "samples.csv",
                minute_samples(&["m/main/power_kw"], 0..1440, kw),
            ),
        ],
    );
    run_with(
        "demand_peak.toml",
        input.path(),
        out.path(),
        &[("BILLING_PERIOD", "day")],
    );

    let bills = latest(rows(out.path(), "billing"), &["site", "period_start"]);
    assert_eq!(bills.len(), 1, "one site, one billing day");
    let b = bills.values().next().unwrap();
    assert_eq!(b["period_start"].as_i64(), Some(T0));
    assert_eq!(b["period_end"].as_i64(), Some(T0 + DAY));
    assert_eq!(b["final"].as_bool(), Some(true));
    assert_eq!(b["intervals"].as_i64(), Some(96));
    rel(f(b, "energy_kwh"), 2455.0, "total kWh");
    rel(f(b, "energy_cost"), 408.90, "energy cost");
    rel(
        f(b, "peak_kw"),
        240.0,
        "billed demand (15-min, not hourly: 135 would be wrong)",
    );
    assert_eq!(b["peak_interval_start"].as_i64(), Some(T0 + 15 * H));
    rel(f(b, "demand_cost"), 3600.0, "demand cost");
    rel(f(b, "total_cost"), 4008.90, "total");
    rel(f(b, "peak_shave_kw"), 60.0, "new peak 180 kW");
    rel(
        f(b, "peak_shave_value"),
        910.50,
        "value of shaving the 15:00 spike",
    );
    let by: serde_json::Value =
        serde_json::from_str(b["energy_by_price"].as_str().unwrap()).unwrap();
    rel(by["0.3"]["kwh"].as_f64().unwrap(), 635.0, "on-peak kWh");
    rel(by["0.3"]["cost"].as_f64().unwrap(), 190.50, "on-peak cost");
    rel(by["0.12"]["kwh"].as_f64().unwrap(), 1820.0, "off-peak kWh");
    rel(
        by["0.12"]["cost"].as_f64().unwrap(),
        218.40,
        "off-peak cost",
    );

    // R7: 03:00 projects 180 kW against a 100 kW billed max (+80 kW × 15),
    // 15:00 projects 240 kW against 180 kW (+60 kW × 15): one open action per site.
    let actions = latest(rows(out.path(), "actions"), &["action_id"]);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let a = actions.values().next().unwrap();
    assert_eq!(a["rule"], "demand_peak");
    assert_eq!(a["site"], "m");
    assert_eq!(a["findings"].as_i64(), Some(2));
    rel(f(a, "value"), 80.0 * 15.0 + 60.0 * 15.0, "value at stake");
    assert_eq!(a["severity"], "high");
    assert_eq!(a["period_start"].as_i64(), Some(T0 + 3 * H));
    assert_eq!(a["period_end"].as_i64(), Some(T0 + 15 * H + 900_000));
    assert_eq!(
        (a["owner"].as_str(), a["action_type"].as_str()),
        (Some("operations"), Some("operational_change"))
    );
}

#[test]
fn tariff_in_plant_time_zone_with_weekends_and_holidays() {
    // Berlin is UTC+1 in January. Weekday on-peak 08–20 local at 0.30, else 0.10;
    // Tuesday 2026-01-06 is declared a holiday (priced like the weekend).
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(
        input.path(),
        &[
            ("assets.csv", ONE_METER.into()),
            (
                "tariff.csv",
                "start_hour,end_hour,price_per_kwh,months,day_types\n0,8,0.10,1-12,weekday\n8,20,0.30,1-12,weekday\n20,24,0.10,1-12,weekday\n0,24,0.10,all,weekend\n".into(),
            ),
        ],
    );
    let mut s = String::from("ts,tag,value,quality\n");
    for d in 0..2 {
        for m in 360..480 {
            s.push_str(&format!(
                "{},m/main/power_kw,60.0,0\n",
                T0 + d * DAY + m * 60_000 + 30_000
            ));
        }
    }
    std::fs::write(input.path().join("samples.csv"), s).unwrap();
    let text = std::fs::read_to_string(dataflow("demand_peak.toml"))
        .unwrap()
        .replace("${PLANT_TZ:-UTC}", "Europe/Berlin")
        .replace(
            "path = \"${INPUT_DIR}/tariff.csv\"",
            "path = \"${INPUT_DIR}/tariff.csv\"\nholidays = [\"2026-01-06\"]",
        );
    let df = input.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    run(&df, input.path(), out.path(), 1);
    let aggs = latest(rows(out.path(), "aggregates"), &["tag", "window_start"]);
    let mut by_day_hour: HashMap<(i64, i64), f64> = HashMap::new();
    for a in aggs.values() {
        let ws = a["window_start"].as_i64().unwrap();
        by_day_hour.insert(
            ((ws - T0) / DAY, ((ws - T0) % DAY) / H),
            f(a, "price_per_kwh"),
        );
    }
    // Monday: 06 UTC = 07 local (0.10), 07 UTC = 08 local (0.30). Tuesday (holiday): 0.10.
    assert_eq!(by_day_hour[&(0, 6)], 0.10);
    assert_eq!(by_day_hour[&(0, 7)], 0.30);
    assert_eq!(by_day_hour[&(1, 6)], 0.10);
    assert_eq!(by_day_hour[&(1, 7)], 0.10);
}

// ---------------------------------------------------------------------------
// PV2 and the rule library. Each rule file runs on a small constant load.

pub(crate) const COMPRESSOR: &str =
    "tag,asset,site,line,kind,standby_kw\ns1/l1/c1/power_kw,s1/l1/c1,s1,s1/l1,compressor,8\n";
pub(crate) const FLAT_012: &str = "start_hour,end_hour,price_per_kwh\n0,24,0.12\n";

#[test]
fn pv2_off_hours_one_open_action_per_asset() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // 40 kW for 18 h; the line runs 10:00–18:00, so 00:00–10:00 is off-hours.
    write(
        input.path(),
        &[
            ("assets.csv", COMPRESSOR.into()),
            ("tariff.csv", PV1_TARIFF.into()),
            (
                "production.csv",
                format!(
                    "line,start_ms,end_ms,units\ns1/l1,{},{},500\n",
                    T0 + 10 * H,
                    T0 + 18 * H
                ),
            ),
            (
                "samples.csv",
                minute_samples(&["s1/l1/c1/power_kw"], 0..18 * 60, |_, _| 40.0),
            ),
        ],
    );
    let s = run_with("off_hours.toml", input.path(), out.path(), &[]);
    let actions = latest(rows(out.path(), "actions"), &["action_id"]);
    assert_eq!(
        actions.len(),
        1,
        "ten idle hours are one open action, not ten"
    );
    let a = actions.values().next().unwrap();
    rel(f(a, "value"), 48.00, "PV2 value");
    assert_eq!(a["findings"].as_i64(), Some(10));
    assert_eq!(a["status"], "open");
    assert_eq!(a["category"], "energy_waste");
    assert_eq!(a["asset"], "s1/l1/c1");
    assert_eq!(a["period_start"].as_i64(), Some(T0));
    assert_eq!(a["period_end"].as_i64(), Some(T0 + 10 * H));
    let ev: serde_json::Value = serde_json::from_str(a["evidence"].as_str().unwrap()).unwrap();
    rel(
        ev["totals"]["waste_kwh"].as_f64().unwrap(),
        400.0,
        "PV2 waste",
    );
    let id = plantflow::value::lifecycle::action_id(
        "off_hours",
        "off_hours",
        &["s1".into(), "s1/l1".into(), "s1/l1/c1".into()],
        T0,
    );
    assert_eq!(a["action_id"].as_str(), Some(id.as_str()), "stable id");
    // Every finding was a new revision of the same action.
    let revs = rows(out.path(), "actions").len();
    assert_eq!(revs, 10, "revision per merged finding");
    assert_eq!(s.report.actions.len(), 1);
}

#[test]
fn lifecycle_updates_cooldown_and_rejected_updates() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let id = plantflow::value::lifecycle::action_id(
        "off_hours",
        "off_hours",
        &["s1".into(), "s1/l1".into(), "s1/l1/c1".into()],
        T0,
    );
    let at = |h: i64| T0 + h * H;
    // Out of order on purpose: applied by `at`.
    let status = format!(
        "{{\"action_id\":\"{id}\",\"status\":\"rejected\",\"at\":{},\"by\":\"bo\",\"note\":\"planned test run\"}}\n\
         {{\"action_id\":\"{id}\",\"status\":\"ack\",\"at\":{},\"by\":\"ann\"}}\n\
         {{\"action_id\":\"{id}\",\"status\":\"done\",\"at\":{}}}\n\
         {{\"action_id\":\"nope\",\"status\":\"done\",\"at\":{}}}\n\
         {{not json\n",
        at(5),
        at(3),
        at(6),
        at(1)
    );
    write(
        input.path(),
        &[
            ("assets.csv", COMPRESSOR.into()),
            ("tariff.csv", FLAT_012.into()),
            ("production.csv", "line,start_ms,end_ms\n".into()),
            (
                "samples.csv",
                minute_samples(&["s1/l1/c1/power_kw"], 0..12 * 60, |_, _| 40.0),
            ),
            ("status.jsonl", status),
        ],
    );
    run_with("off_hours.toml", input.path(), out.path(), &[]);
    let all = rows(out.path(), "actions");
    let first: Vec<_> = all
        .iter()
        .filter(|r| r["action_id"] == id.as_str())
        .collect();
    let statuses: Vec<&str> = {
        let mut v: Vec<_> = first
            .iter()
            .map(|r| {
                (
                    r["revision"].as_i64().unwrap(),
                    r["status"].as_str().unwrap(),
                )
            })
            .collect();
        v.sort();
        let mut s: Vec<&str> = v.into_iter().map(|x| x.1).collect();
        s.dedup();
        s
    };
    assert_eq!(statuses, ["open", "acknowledged", "rejected"]);
    let latest_actions = latest(all.clone(), &["action_id"]);
    let a1 = &latest_actions[&format!("\"{id}\"")];
    assert_eq!(a1["status"], "rejected");
    assert_eq!(a1["status_by"], "bo");
    assert_eq!(a1["status_note"], "planned test run");
    assert_eq!(
        a1["findings"].as_i64(),
        Some(5),
        "hours 0–4 ended before the rejection"
    );
    rel(f(a1, "value"), 5.0 * 40.0 * 0.12, "value of hours 0–4");
    // Cool-down 4 h from 05:00: hours 5–8 suppressed, hour 9 opens a new action.
    assert_eq!(latest_actions.len(), 2);
    let a2 = latest_actions
        .values()
        .find(|r| r["action_id"] != id.as_str())
        .unwrap();
    assert_eq!(a2["period_start"].as_i64(), Some(at(9)));
    assert_eq!(a2["findings"].as_i64(), Some(3));
    let dead = dead_letters(out.path());
    let reasons: Vec<&str> = dead.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"invalid transition rejected → done"),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"unknown action `nope`"), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("malformed status update")),
        "{reasons:?}"
    );
    assert_eq!(dead.len(), 3);
}

#[test]
fn maintenance_suppresses_findings() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    write(
        input.path(),
        &[
            ("assets.csv", COMPRESSOR.into()),
            ("tariff.csv", FLAT_012.into()),
            ("production.csv", "line,start_ms,end_ms\n".into()),
            (
                "maintenance.csv",
                format!(
                    "asset,start_ms,end_ms\ns1/l1/c1,{},{}\n",
                    T0 + 2 * H + 600_000,
                    T0 + 4 * H
                ),
            ),
            (
                "samples.csv",
                minute_samples(&["s1/l1/c1/power_kw"], 0..6 * 60, |_, _| 40.0),
            ),
        ],
    );
    let text = std::fs::read_to_string(dataflow("off_hours.toml")).unwrap().replace(
        "[context.production]",
        "[context.maintenance]\npath = \"${INPUT_DIR}/maintenance.csv\"\n\n[context.production]",
    );
    let df = input.path().join("df.toml");
    std::fs::write(&df, text).unwrap();
    let s = run(&df, input.path(), out.path(), 1);
    let actions = latest(rows(out.path(), "actions"), &["action_id"]);
    assert_eq!(actions.len(), 1);
    let a = actions.values().next().unwrap();
    // Hours 2 and 3 overlap the maintenance window: 4 of 6 findings remain.
    assert_eq!(a["findings"].as_i64(), Some(4));
    rel(
        f(a, "value"),
        4.0 * 40.0 * 0.12,
        "value without maintenance hours",
    );
    assert_eq!(s.suppressed_maintenance, 2);
}

/// Runs a library rule file on one asset's constant signals for `hours`; returns the only action.
fn library_case(
    file: &str,
    assets: &str,
    production: &str,
    hours: i64,
    kw: impl Fn(&str, i64) -> f64,
) -> HashMap<String, serde_json::Value> {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let tags: Vec<String> = assets
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let tag_refs: Vec<&str> = tags.iter().map(|s| s.as_str()).collect();
    write(
        input.path(),
        &[
            ("assets.csv", assets.into()),
            (
                "tariff.csv",
                "start_hour,end_hour,price_per_kwh\n0,24,0.10\n".into(),
            ),
            ("production.csv", production.into()),
            ("samples.csv", minute_samples(&tag_refs, 0..hours * 60, kw)),
        ],
    );
    // `file` may carry extra TOML after a `+`: appended to the dataflow.
    let (file, extra) = file.split_once('+').unwrap_or((file, ""));
    let df = input.path().join(file);
    let text = std::fs::read_to_string(dataflow(file)).unwrap();
    std::fs::write(&df, format!("{text}\n{extra}")).unwrap();
    run(&df, input.path(), out.path(), 1);
    let actions = latest(rows(out.path(), "actions"), &["action_id"]);
    assert_eq!(actions.len(), 1, "{file}: {actions:?}");
    actions.into_values().next().unwrap()
}

fn routed(a: &HashMap<String, serde_json::Value>, owner: &str, action_type: &str, category: &str) {
    assert_eq!(
        (
            a["owner"].as_str(),
            a["action_type"].as_str(),
            a["value_category"].as_str()
        ),
        (Some(owner), Some(action_type), Some(category))
    );
}

#[test]
fn library_idle_load() {
    // 50 kW while producing 08–16, 20 kW idle (standby 2) the other 16 h: 20 > 0.3 × 50.
    let a = library_case(
        "idle_load.toml",
        "tag,asset,site,line,kind,standby_kw\ns1/l1/p1/power_kw,s1/l1/p1,s1,s1/l1,motor,2\n",
        &format!(
            "line,start_ms,end_ms\ns1/l1,{},{}\n",
            T0 + 8 * H,
            T0 + 16 * H
        ),
        24,
        |_, m| if (480..960).contains(&m) { 50.0 } else { 20.0 },
    );
    rel(
        f(&a, "value"),
        16.0 * 18.0 * 0.10,
        "idle energy above standby",
    );
    routed(&a, "production", "operational_change", "energy_cost");
}

#[test]
fn library_baseload_creep() {
    let a = library_case(
        "baseload_creep.toml",
        "tag,asset,site,line,kind,standby_kw,base_kw\ns1/l1/h1/power_kw,s1/l1/h1,s1,s1/l1,hvac,0,10\n",
        "line,start_ms,end_ms\n",
        24,
        |_, m| if m % 60 == 0 { 15.0 } else { 12.0 },
    );
    // Lowest idle minute 12 kW vs 10 registered: 2 kW × 24 h × 0.10.
    rel(f(&a, "value"), 2.0 * 24.0 * 0.10, "excess base load");
    routed(&a, "energy", "further_study", "energy_cost");
}

#[test]
fn library_compressor_specific_power() {
    let a = library_case(
        "compressor_specific_power.toml",
        "tag,asset,site,line,kind,standby_kw,signal,target_sp\ns1/l1/c1/power_kw,s1/l1/c1,s1,s1/l1,compressor,5,power_kw,6.0\ns1/l1/c1/flow,s1/l1/c1,s1,s1/l1,compressor,5,flow_m3min,6.0\n",
        "line,start_ms,end_ms\n",
        1,
        |t, _| if t.ends_with("power_kw") { 70.0 } else { 10.0 },
    );
    // 7 kW/(m³/min) against 6: (70 − 6 × 10) kWh × 0.10.
    rel(f(&a, "value"), 1.0, "excess energy cost");
    routed(&a, "engineering", "setpoint_review", "energy_cost");
}

#[test]
fn library_chiller_kw_per_ton() {
    let a = library_case(
        "chiller_efficiency.toml",
        "tag,asset,site,line,kind,standby_kw,signal,target_kw_per_ton\ns1/u/ch1/power_kw,s1/u/ch1,s1,s1/u,chiller,0,power_kw,0.75\ns1/u/ch1/tons,s1/u/ch1,s1,s1/u,chiller,0,cooling_tons,0.75\n",
        "line,start_ms,end_ms\n",
        1,
        |_, _| 100.0, // 100 kW and 100 tons
    );
    // 1.0 kW/ton against 0.75: (100 − 75) kWh × 0.10.
    rel(f(&a, "value"), 2.5, "excess energy cost");
    routed(&a, "engineering", "setpoint_review", "energy_cost");
}

#[test]
fn routing_matrix_reassigns_by_category_and_kind() {
    let routes = "[[routing]]\ncategory = \"efficiency\"\nkind = \"compressor\"\nowner = \"energy\"\n\n\
                  [[routing]]\ncategory = \"efficiency\"\nkind = \"chiller\"\nowner = \"maintenance\"\naction_type = \"maintenance_work\"\n";
    let a = library_case(
        &format!("chiller_efficiency.toml+{routes}"),
        "tag,asset,site,line,kind,standby_kw,signal,target_kw_per_ton\ns1/u/ch1/power_kw,s1/u/ch1,s1,s1/u,chiller,0,power_kw,0.75\ns1/u/ch1/tons,s1/u/ch1,s1,s1/u,chiller,0,cooling_tons,0.75\n",
        "line,start_ms,end_ms\n",
        1,
        |_, _| 100.0,
    );
    routed(&a, "maintenance", "maintenance_work", "energy_cost");
}

#[test]
fn library_low_power_factor() {
    let a = library_case(
        "power_factor.toml",
        "tag,asset,site,line,kind,standby_kw,signal\ns1/l1/m1/power_kw,s1/l1/m1,s1,s1/l1,motor,0,power_kw\ns1/l1/m1/kvar,s1/l1/m1,s1,s1/l1,motor,0,reactive_kvar\n",
        "line,start_ms,end_ms\n",
        1,
        |t, _| if t.ends_with("power_kw") { 100.0 } else { 75.0 },
    );
    // PF 0.8: (75 − 0.4843 × 100) kvarh × 0.02.
    rel(f(&a, "value"), (75.0 - 48.43) * 0.02, "reactive charge");
    routed(&a, "engineering", "capex", "compliance_risk");
}

// ---------------------------------------------------------------------------
// PV3 end to end in --follow: the action opens, is marked done mid-stream with
// the CLI, and its outcome appears once the reporting period has closed.

/// Daily kW and production units: PV3's baseline days 0–5, a day with 4 idle
/// hours (the finding) and a normal day, then PV3's reporting days 8–10.
fn pv3_day(d: i64) -> (f64, f64) {
    const E: [f64; 11] = [
        710., 760., 870., 950., 1000., 1110., 960., 960., 750., 900., 980.,
    ];
    const P: [f64; 11] = [50., 60., 70., 80., 90., 100., 70., 70., 60., 80., 90.];
    let i = d.min(10) as usize;
    (E[i] / 24.0, P[i])
}

/// PV3 production runs for `days` (day 6 stops at 20:00: four idle hours).
pub(crate) fn pv3_production(days: std::ops::Range<i64>) -> String {
    let mut prod = String::from("line,start_ms,end_ms,units\n");
    for d in days {
        let end = if d == 6 { 20 * H } else { DAY };
        prod.push_str(&format!(
            "s1/l1,{},{},{}\n",
            T0 + d * DAY,
            T0 + d * DAY + end,
            pv3_day(d).1
        ));
    }
    prod
}

pub(crate) fn pv3_samples(days: std::ops::Range<i64>, extra_minutes: i64) -> String {
    let mut s = String::new();
    for m in days.start * 1440..days.end * 1440 + extra_minutes {
        s.push_str(&format!(
            "{},s1/l1/c1/power_kw,{},0\n",
            T0 + m * 60_000 + 30_000,
            pv3_day(m / 1440).0
        ));
    }
    s
}

#[test]
fn pv3_outcome_after_done_mid_stream() {
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = input.path();
    let prod = pv3_production(0..12);
    write(
        dir,
        &[
            ("assets.csv", COMPRESSOR.into()),
            ("tariff.csv", FLAT_012.into()),
            ("production.csv", prod),
            (
                "samples.csv",
                format!("ts,tag,value,quality\n{}", pv3_samples(0..8, 0)),
            ),
        ],
    );
    let text = std::fs::read_to_string(dataflow("off_hours.toml"))
        .unwrap()
        .replace("${BASELINE:-28d}", "6d")
        .replace("${REPORTING:-14d}", "3d")
        .replace("${COOLDOWN:-4h}", "30d")
        .replace(
            "path = \"${OUT_DIR:-out}\"",
            "path = \"${OUT_DIR:-out}\"\nroll_interval = \"100ms\"",
        );
    // The operator surface too: its outcome counts are checked at the end.
    let port = plantflow::sim::broker::free_port().unwrap();
    let text = format!("{text}\n[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let df = dir.join("df.toml");
    std::fs::write(&df, &text).unwrap();
    let mut child = spawn_follow(&df, dir, out.path());
    // Day 6, 20:00–24:00: the line is idle, the compressor draws 40 kW.
    let action = wait_for("the off-hours action", || {
        let a = latest(rows(out.path(), "actions"), &["action_id"]);
        a.into_values().find(|r| r["findings"].as_i64() == Some(4))
    });
    assert_eq!(action["period_start"].as_i64(), Some(T0 + 6 * DAY + 20 * H));
    assert_eq!(action["status"], "open");
    let id = action["action_id"].as_str().unwrap().to_string();

    let done = Command::new(PLANTFLOW)
        .args(["action", "done", &id, "--dataflow"])
        .arg(&df)
        .args([
            "--at",
            "2026-01-12T12:00:00Z",
            "--by",
            "ann",
            "--note",
            "auto-stop installed",
        ])
        .env("INPUT_DIR", dir)
        .env("OUT_DIR", out.path())
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    wait_for("the done revision", || {
        rows(out.path(), "actions")
            .into_iter()
            .find(|r| r["action_id"] == id.as_str() && r["status"] == "done")
    });
    // Reporting starts at the next day boundary after `done` (day 8) and has no data yet.
    let pending = rows(out.path(), "outcomes");
    assert!(
        pending
            .iter()
            .all(|o| o["final"] == false && o["verdict"] == "pending"),
        "{pending:?}"
    );

    // The reporting days arrive, plus an hour of day 11 so the watermark passes day 10.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("samples.csv"))
        .unwrap();
    std::io::Write::write_all(&mut file, pv3_samples(8..11, 60).as_bytes()).unwrap();
    drop(file);
    let o = wait_for("the final outcome", || {
        rows(out.path(), "outcomes")
            .into_iter()
            .find(|o| o["final"] == true)
    });
    assert_eq!(o["action_id"].as_str(), Some(id.as_str()));
    assert_eq!(o["baseline_start"].as_i64(), Some(T0));
    assert_eq!(o["baseline_end"].as_i64(), Some(T0 + 6 * DAY));
    assert_eq!(o["reporting_start"].as_i64(), Some(T0 + 8 * DAY));
    assert_eq!(o["reporting_end"].as_i64(), Some(T0 + 11 * DAY));
    assert_eq!(
        (o["n_baseline"].as_i64(), o["n_reporting"].as_i64()),
        (Some(6), Some(3))
    );
    rel(f(&o, "r2"), 0.989_399_293_286_219, "R²");
    rel(f(&o, "cv_rmse"), 300f64.sqrt() / 900.0, "CV(RMSE) 1.9245 %");
    assert!(f(&o, "nmbe").abs() < 1e-9, "NMBE 0");
    rel(f(&o, "baseline_kwh"), 2740.0, "adjusted baseline");
    rel(f(&o, "actual_kwh"), 2630.0, "measured");
    rel(f(&o, "avoided_kwh"), 110.0, "avoided energy");
    rel(f(&o, "avoided_cost"), 110.0 * 0.12, "avoided cost");
    rel(f(&o, "fractional_savings"), 110.0 / 2740.0, "F 4.0146 %");
    assert!(
        (f(&o, "fsu_68") - 0.4568).abs() < 5e-5,
        "FSU68 {}",
        o["fsu_68"]
    );
    assert!(
        (f(&o, "fsu_90") - 0.8584).abs() < 5e-5,
        "FSU90 {}",
        o["fsu_90"]
    );
    assert_eq!(o["verdict"], "verified");
    assert_eq!(o["model"], "kwh = 300.000000 + 8.000000 * units");
    let a = wait_for("the verified action", || {
        latest(rows(out.path(), "actions"), &["action_id"])
            .remove(&format!("\"{id}\""))
            .filter(|a| a["status"] == "verified")
    });
    assert_eq!(a["status_by"], "plantflow");
    // `/metrics` counts the lake's latest outcome by verdict.
    wait_for("the verified outcome in /metrics", || {
        let (_, m) = http_get(port, "/metrics");
        m.lines()
            .any(|l| l == "plantflow_outcomes{verdict=\"verified\"} 1")
            .then_some(())
    });

    assert!(child.terminate().success());
}

#[test]
fn insufficient_baseline_gives_insufficient_data() {
    // Only 2 baseline days exist: the model needs 4 periods with a driver.
    let input = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = input.path();
    let prod = pv3_production(4..11);
    let id_at = T0 + 6 * DAY + 20 * H;
    let id = plantflow::value::lifecycle::action_id(
        "off_hours",
        "off_hours",
        &["s1".into(), "s1/l1".into(), "s1/l1/c1".into()],
        id_at,
    );
    write(
        dir,
        &[
            ("assets.csv", COMPRESSOR.into()),
            ("tariff.csv", FLAT_012.into()),
            ("production.csv", prod),
            (
                "samples.csv",
                format!("ts,tag,value,quality\n{}", pv3_samples(4..11, 60)),
            ),
            (
                "status.jsonl",
                format!(
                    "{{\"action_id\":\"{id}\",\"status\":\"done\",\"at\":{}}}\n",
                    T0 + 7 * DAY + 12 * H
                ),
            ),
        ],
    );
    run_with(
        "off_hours.toml",
        dir,
        out.path(),
        &[("BASELINE", "6d"), ("REPORTING", "3d"), ("COOLDOWN", "30d")],
    );
    let o = latest(rows(out.path(), "outcomes"), &["action_id"]);
    let o = &o[&format!("\"{id}\"")];
    assert_eq!(o["verdict"], "insufficient_data");
    assert_eq!(o["n_baseline"].as_i64(), Some(2));
    assert!(
        o["reason"].as_str().unwrap().contains("at least 4"),
        "{}",
        o["reason"]
    );
    let a = &latest(rows(out.path(), "actions"), &["action_id"])[&format!("\"{id}\"")];
    assert_eq!(a["status"], "not_verified");
}

#[test]
fn every_library_dataflow_validates() {
    // Each file with the columns its header says it needs.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("assets.csv", "tag,asset,site,line,kind,standby_kw,signal,target_sp,target_kw_per_ton,base_kw,occupied_from,occupied_to\nt,a,s,l,compressor,1,power_kw,6,0.7,3,6,18\n".into()),
            ("tariff.csv", FLAT_012.into()),
            ("production.csv", "line,start_ms,end_ms,units\n".into()),
            ("samples.csv", "ts,tag,value,quality\n".into()),
            ("http.token", "0123456789abcdef0123\n".into()),
        ],
    );
    let files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        load(&f, dir.path(), dir.path());
    }
}

#[test]
fn tariff_gap_or_overlap_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("assets.csv", ONE_METER.into()),
            ("tariff.csv", "start_hour,end_hour,price_per_kwh,day_types\n0,24,0.1,weekday\n0,12,0.1,weekend\n10,24,0.2,weekend\n".into()),
            ("samples.csv", "ts,tag,value,quality\n".into()),
        ],
    );
    let out = Command::new(PLANTFLOW)
        .args(["validate"])
        .arg(dataflow("demand_peak.toml"))
        .env("INPUT_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4")
            && err.contains("month 1, weekend, hour 10")
            && err.contains("overlapping"),
        "{err}"
    );
    assert!(err.contains("context.tariff.path"), "{err}");
}
