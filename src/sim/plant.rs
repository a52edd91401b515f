//! The demo plant: two sites on an accelerated clock, with five injected
//! problems that the bundled rules (`dataflows/demo.toml`) must find.
//!
//! Everything here is a pure function of simulated time plus a small
//! [`Fixes`] state (what the "crew" has done), so a run is reproducible and a
//! test can name the expected actions. [`Plant::step`] returns every tag's
//! value at one instant; the demo publishes them over OPC UA (site 1), MQTT
//! JSON (site 2's line) and Sparkplug B (site 2's utilities edge node).
//!
//! The week starts on Thursday 2026-03-05 00:00 UTC. Lines run weekdays
//! 06:00–22:00 in two-hour production runs (line 3: 07:00–15:00).
//!
//! | problem | asset | when | rule → owner / action |
//! |---|---|---|---|
//! | compressor left running over the weekend | site1/l1/comp1 | Sat–Sun, until fixed | `compressor_off_hours` → operations / operational_change |
//! | idle load at zero production | site2/l2/conveyor1 | always (45 % of run power idle) | `idle_load` → production / operational_change |
//! | chiller drifting to poor kW/ton | site1/utilities/chiller1 | 0.62 → 1.0 kW/ton over the week | `chiller_kw_per_ton` → engineering / setpoint_review |
//! | starts not staggered: demand peak | site2 (meter) | Tuesday 06:00 | `demand_peak` → operations / operational_change |
//! | baseload creep | site2/utilities/hvac | +15 kW from Friday noon | `baseload_creep` → energy / further_study |
//!
//! The compressor fix (an auto-stop schedule, applied when its action is
//! done) also stops it on weekday nights, so its verified outcome shows
//! avoided energy against the production-normalised baseline. Cleaning the
//! chiller (its action done) brings it back to 0.62 kW/ton for good.

/// Simulated start: Thursday 2026-03-05 00:00:00 UTC.
pub const T0: i64 = 1_772_668_800_000;
const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// How a tag reaches plantflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    OpcUa,
    MqttJson,
    /// Sparkplug B device metric of the utilities edge node.
    Sparkplug,
}

/// One simulated signal and its context row.
#[derive(Clone, Debug)]
pub struct TagSpec {
    /// Tag name as plantflow sees it.
    pub tag: String,
    pub via: Via,
    pub site: &'static str,
    pub line: &'static str,
    pub asset: &'static str,
    pub kind: &'static str,
    pub signal: &'static str,
    pub unit: &'static str,
    pub eu_high: f64,
    pub standby_kw: f64,
    pub base_kw: f64,
    pub target_kw_per_ton: f64,
}

/// Sparkplug naming of the utilities edge node.
pub const SP_GROUP: &str = "plant";
pub const SP_NODE: &str = "site2-utilities";

/// What the crew has done, with the simulated time it took effect.
#[derive(Clone, Debug, Default)]
pub struct Fixes {
    /// Auto-stop schedule on the compressor.
    pub compressor_auto_stop: Option<i64>,
    /// Chiller condenser cleaned: back to 0.62 kW/ton, no more drift.
    pub chiller_cleaned: Option<i64>,
}

/// The problem an action is expected for: (rule, site, asset, owner, action type).
pub const EXPECTED: &[(&str, &str, &str, &str, &str)] = &[
    (
        "compressor_off_hours",
        "site1",
        "comp1",
        "operations",
        "operational_change",
    ),
    (
        "idle_load",
        "site2",
        "conveyor1",
        "production",
        "operational_change",
    ),
    (
        "chiller_kw_per_ton",
        "site1",
        "chiller1",
        "engineering",
        "setpoint_review",
    ),
    (
        "demand_peak",
        "site2",
        "",
        "operations",
        "operational_change",
    ),
    ("baseload_creep", "site2", "hvac", "energy", "further_study"),
];

/// The simulated plant.
pub struct Plant {
    pub tags: Vec<TagSpec>,
}

fn spec(
    via: Via,
    [site, line, asset]: [&'static str; 3],
    kind: &'static str,
    signal: &'static str,
    eu_high: f64,
    standby_kw: f64,
) -> TagSpec {
    let tag = match via {
        Via::Sparkplug => format!("{SP_GROUP}/{SP_NODE}/{asset}/{signal}"),
        _ => format!("{site}/{line}/{asset}/{signal}"),
    };
    TagSpec {
        tag,
        via,
        site,
        line,
        asset,
        kind,
        signal,
        unit: if signal == "cooling_tons" {
            "tonR"
        } else {
            "kW"
        },
        eu_high,
        standby_kw,
        base_kw: 0.0,
        target_kw_per_ton: 0.0,
    }
}

/// Production runs of a line: (start, end, units), in time order.
pub fn production_runs(line: &str, days: i64) -> Vec<(i64, i64, f64)> {
    // Units per two-hour run; each day uses the same values in a rotated
    // order, so reporting days never leave the baseline's driver range.
    const UNITS: [f64; 8] = [160.0, 240.0, 200.0, 180.0, 220.0, 170.0, 230.0, 190.0];
    let (first, runs) = match line {
        "l1" | "l2" => (6, 8),
        "l3" => (7, 4),
        _ => return Vec::new(),
    };
    let shift = if line == "l2" { 3 } else { 0 };
    let mut out = Vec::new();
    for d in 0..days {
        let day = T0 + d * DAY;
        if !is_weekday(day) {
            continue;
        }
        for r in 0..runs {
            let s = day + (first + 2 * r) * HOUR;
            out.push((s, s + 2 * HOUR, UNITS[(r + d + shift) as usize % 8]));
        }
    }
    out
}

/// Monday..Friday (T0 is a Thursday).
fn is_weekday(t: i64) -> bool {
    let dow = ((t - T0).div_euclid(DAY) + 3).rem_euclid(7); // 0 = Monday
    dow < 5
}

/// Deterministic noise in [-1, 1] for (tag, step).
fn noise(tag: usize, t: i64) -> f64 {
    let mut z = (tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

impl Default for Plant {
    fn default() -> Self {
        Plant::new()
    }
}

impl Plant {
    pub fn new() -> Plant {
        use Via::*;
        let mut tags = vec![
            // Site 1 over OPC UA.
            spec(
                OpcUa,
                ["site1", "l1", "comp1"],
                "compressor",
                "power_kw",
                60.0,
                15.0,
            ),
            spec(
                OpcUa,
                ["site1", "l1", "drive1"],
                "motor",
                "power_kw",
                120.0,
                5.0,
            ),
            spec(
                OpcUa,
                ["site1", "l3", "packer1"],
                "motor",
                "power_kw",
                60.0,
                4.0,
            ),
            spec(
                OpcUa,
                ["site1", "l3", "wrapper1"],
                "motor",
                "power_kw",
                30.0,
                2.0,
            ),
            spec(
                OpcUa,
                ["site1", "utilities", "chiller1"],
                "chiller",
                "power_kw",
                300.0,
                0.0,
            ),
            spec(
                OpcUa,
                ["site1", "utilities", "chiller1"],
                "chiller",
                "cooling_tons",
                400.0,
                0.0,
            ),
            spec(
                OpcUa,
                ["site1", "hall", "lighting1"],
                "lighting",
                "power_kw",
                40.0,
                2.0,
            ),
            spec(
                OpcUa,
                ["site1", "main", "meter1"],
                "meter",
                "power_kw",
                1500.0,
                0.0,
            ),
            // Site 2's line and meter over MQTT JSON.
            spec(
                MqttJson,
                ["site2", "l2", "extruder1"],
                "motor",
                "power_kw",
                200.0,
                8.0,
            ),
            spec(
                MqttJson,
                ["site2", "l2", "mixer1"],
                "motor",
                "power_kw",
                100.0,
                5.0,
            ),
            spec(
                MqttJson,
                ["site2", "l2", "mixer2"],
                "motor",
                "power_kw",
                100.0,
                5.0,
            ),
            spec(
                MqttJson,
                ["site2", "l2", "conveyor1"],
                "motor",
                "power_kw",
                50.0,
                3.0,
            ),
            spec(
                MqttJson,
                ["site2", "main", "meter2"],
                "meter",
                "power_kw",
                1500.0,
                0.0,
            ),
            // Site 2's utilities over Sparkplug B.
            spec(
                Sparkplug,
                ["site2", "utilities", "hvac"],
                "hvac",
                "power_kw",
                120.0,
                0.0,
            ),
            spec(
                Sparkplug,
                ["site2", "utilities", "lighting2"],
                "lighting",
                "power_kw",
                50.0,
                2.0,
            ),
        ];
        for t in &mut tags {
            match t.asset {
                "chiller1" => t.target_kw_per_ton = 0.75,
                "hvac" => t.base_kw = 40.0,
                _ => {}
            }
        }
        Plant { tags }
    }

    /// `assets.csv` for the dataflow.
    pub fn assets_csv(&self) -> String {
        let mut s =
            String::from("tag,asset,site,line,kind,standby_kw,signal,base_kw,target_kw_per_ton\n");
        for t in &self.tags {
            s.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                t.tag,
                t.asset,
                t.site,
                t.line,
                t.kind,
                t.standby_kw,
                t.signal,
                t.base_kw,
                t.target_kw_per_ton
            ));
        }
        s
    }

    /// `production.csv` (the MES schedule export) for `days` days.
    pub fn production_csv(days: i64) -> String {
        let mut s = String::from("line,start_ms,end_ms,units\n");
        let mut all = Vec::new();
        for line in ["l1", "l2", "l3"] {
            for (a, b, u) in production_runs(line, days) {
                all.push((a, line, b, u));
            }
        }
        all.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        for (a, line, b, u) in all {
            s.push_str(&format!("{line},{a},{b},{u}\n"));
        }
        s
    }

    /// Production rate of a line at `t` in units per hour (0 when idle).
    fn rate(line: &str, t: i64) -> f64 {
        let day = T0 + (t - T0).div_euclid(DAY) * DAY;
        if !is_weekday(day) {
            return 0.0;
        }
        let d = (t - T0).div_euclid(DAY) + 1;
        production_runs(line, d)
            .into_iter()
            .filter(|r| r.0 <= t && t < r.1)
            .map(|r| r.2 / 2.0)
            .next()
            .unwrap_or(0.0)
    }

    /// Minutes since the line's first run of the day started (None before it / when idle).
    fn since_start(line: &str, t: i64) -> Option<i64> {
        if Self::rate(line, t) == 0.0 {
            return None;
        }
        let day = T0 + (t - T0).div_euclid(DAY) * DAY;
        let first = if line == "l3" { 7 } else { 6 };
        Some((t - day - first * HOUR) / MIN)
    }

    /// A motor's power: idle, or running with a start surge of 1.6× for 10 minutes.
    fn motor(rate: f64, since: Option<i64>, start_at: i64, idle: f64, run: f64) -> f64 {
        match since {
            Some(m) if m >= start_at => {
                if m < start_at + 10 {
                    1.6 * run
                } else {
                    run
                }
            }
            _ if rate > 0.0 => idle,
            _ => idle,
        }
    }

    /// Every tag's value at `t` (index = position in `tags`).
    pub fn step(&self, t: i64, fixes: &Fixes) -> Vec<f64> {
        let dow_weekday = is_weekday(t);
        let hour = (t - T0).rem_euclid(DAY) / HOUR;
        let minute_of_day = (t - T0).rem_euclid(DAY) / MIN;
        let r1 = Self::rate("l1", t);
        let r2 = Self::rate("l2", t);
        let r3 = Self::rate("l3", t);
        let s1 = Self::since_start("l1", t);
        let s2 = Self::since_start("l2", t);
        let s3 = Self::since_start("l3", t);
        let auto_stop = fixes.compressor_auto_stop.is_some_and(|at| t >= at);
        let elapsed_days = (t - T0) as f64 / DAY as f64;
        let lights_on = dow_weekday && (330..1350).contains(&minute_of_day);
        // Tuesday 06:00: the start sequencer is bypassed on line 2.
        let tuesday = T0 + 5 * DAY;
        let unstaggered = (tuesday..tuesday + DAY).contains(&t);
        let stagger = |k: i64| if unstaggered { 0 } else { 15 * k };

        let comp = if r1 > 0.0 {
            12.0 + 0.25 * r1
        } else if auto_stop {
            1.5
        } else if !dow_weekday {
            38.0 // left running loaded over the weekend
        } else {
            12.0 // unloaded overnight
        };
        let drive = Self::motor(r1, s1, 0, 4.0, 20.0 + 0.5 * r1);
        let packer = Self::motor(r3, s3, 0, 3.0, 10.0 + 0.5 * r3);
        let wrapper = Self::motor(r3, s3, 15, 1.5, 5.0 + 0.25 * r3);
        // Chilled-water load follows line 1 with an hour's ramp.
        let ramp = s1.map_or(0.0, |m| (m as f64 / 60.0).min(1.0));
        let tons = 90.0 + ramp * (60.0 + 0.5 * r1.max(80.0));
        let kw_per_ton = if fixes.chiller_cleaned.is_some_and(|at| t >= at) {
            0.62
        } else {
            0.62 + 0.38 * (elapsed_days / 7.0).min(1.0)
        };
        let chiller = tons * kw_per_ton;
        let light1 = if lights_on { 25.0 } else { 1.0 };
        let extruder = Self::motor(r2, s2, stagger(0), 6.0, 40.0 + 0.6 * r2);
        let mixer1 = Self::motor(r2, s2, stagger(1), 3.0, 20.0 + 0.3 * r2);
        let mixer2 = Self::motor(r2, s2, stagger(2), 3.0, 20.0 + 0.3 * r2);
        let conveyor = if r2 > 0.0 {
            Self::motor(r2, s2, stagger(3), 11.0, 10.0 + 0.15 * r2)
        } else {
            11.0 // left running between runs: 45 % of its run power
        };
        let creep_start = T0 + DAY + 12 * HOUR;
        let creep = ((t - creep_start) as f64 / DAY as f64).clamp(0.0, 1.0) * 15.0;
        let comfort = if dow_weekday && (5..20).contains(&hour) {
            20.0
        } else {
            0.0
        };
        let hvac = 40.0 + creep + comfort;
        let light2 = if lights_on { 30.0 } else { 1.0 };

        let mut v = vec![
            comp, drive, packer, wrapper, chiller, tons, light1, 0.0, extruder, mixer1, mixer2,
            conveyor, 0.0, hvac, light2,
        ];
        // Measurement noise (±1 %), then the meters sum what they feed.
        for (i, x) in v.iter_mut().enumerate() {
            *x *= 1.0 + 0.01 * noise(i, t);
        }
        let base1 = 300.0 * (1.0 + 0.005 * noise(100, t));
        let base2 = 260.0 * (1.0 + 0.005 * noise(101, t));
        v[7] = base1 + v[0] + v[1] + v[2] + v[3] + v[4] + v[6];
        v[12] = base2 + v[8] + v[9] + v[10] + v[11] + v[13] + v[14];
        v
    }
}

/// RFC 3339 (UTC, seconds).
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t0_is_a_thursday_midnight() {
        assert_eq!(iso(T0), "2026-03-05T00:00:00Z");
        assert!(is_weekday(T0) && is_weekday(T0 + DAY));
        assert!(!is_weekday(T0 + 2 * DAY) && !is_weekday(T0 + 3 * DAY));
        assert!(is_weekday(T0 + 4 * DAY));
    }

    #[test]
    fn meters_sum_their_feeds_and_weekends_do_not_produce() {
        let p = Plant::new();
        let v = p.step(T0 + 10 * HOUR, &Fixes::default());
        let fed: f64 = [0, 1, 2, 3, 4, 6].iter().map(|&i| v[i]).sum();
        assert!((v[7] - fed - 300.0).abs() < 2.0, "{} vs {}", v[7], fed);
        assert_eq!(production_runs("l1", 7).len(), 5 * 8);
        let sat = p.step(T0 + 2 * DAY + 3 * HOUR, &Fixes::default());
        assert!(sat[0] > 37.0, "compressor left running: {}", sat[0]);
        let fixed = p.step(
            T0 + 2 * DAY + 3 * HOUR,
            &Fixes {
                compressor_auto_stop: Some(T0 + 2 * DAY),
                ..Fixes::default()
            },
        );
        assert!(fixed[0] < 2.0);
    }
}
