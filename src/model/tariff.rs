//! Time-of-use tariffs in the plant's local time.
//!
//! A tariff is a price per kWh for every (month, day type, local hour).
//! `tariff.csv` lists periods as rows:
//!
//! ```text
//! start_hour,end_hour,price_per_kwh[,months][,day_types]
//! 0,13,0.12,1-12,all
//! 13,19,0.30,6-9,weekday
//! ```
//!
//! Hours are half-open `[start_hour, end_hour)` in local time; `months` is a
//! list of months or ranges (`1-12`, `6-9`, `12,1,2`; default all);
//! `day_types` is `all` or a `|`-list of `weekday`, `weekend`, `holiday`
//! (default all). Holidays without a row of their own are priced like
//! weekends. Every (month, day type, hour) must be covered exactly once:
//! a gap or an overlap is an error naming the line.
//!
//! The engine joins windows on a [`TariffKey`] computed from the window
//! start in the plant's IANA timezone (DST-aware) and the holiday list, so a
//! changed tariff file retracts and re-prices exactly the affected windows.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{Datelike, NaiveDate, TimeZone, Timelike};
use chrono_tz::Tz;

use crate::model::F64;

/// `month * 1000 + day_type * 100 + hour` (month 1–12, day type 0 weekday, 1 weekend, 2 holiday).
pub type TariffKey = u32;

pub const WEEKDAY: u32 = 0;
pub const WEEKEND: u32 = 1;
pub const HOLIDAY: u32 = 2;
pub const DAY_TYPES: &[&str] = &["weekday", "weekend", "holiday"];

pub fn key(month: u32, day_type: u32, hour: u32) -> TariffKey {
    month * 1000 + day_type * 100 + hour
}

/// Local hour of day of a key.
pub fn hour_of(k: TariffKey) -> u32 {
    k % 100
}

/// Day type of a key (0 weekday, 1 weekend, 2 holiday).
pub fn day_type_of(k: TariffKey) -> u32 {
    (k / 100) % 10
}

/// The plant's calendar: timezone and holidays.
#[derive(Clone, Debug)]
pub struct Calendar {
    pub tz: Tz,
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            tz: chrono_tz::UTC,
            holidays: BTreeSet::new(),
        }
    }
}

impl Calendar {
    /// The tariff key of the instant `ms` (epoch milliseconds, UTC).
    pub fn key_at(&self, ms: i64) -> TariffKey {
        let Some(utc) = chrono::DateTime::from_timestamp_millis(ms) else {
            return key(1, WEEKDAY, 0);
        };
        let local = utc.with_timezone(&self.tz);
        let date = local.date_naive();
        let day_type = if self.holidays.contains(&date) {
            HOLIDAY
        } else if local.weekday().number_from_monday() >= 6 {
            WEEKEND
        } else {
            WEEKDAY
        };
        key(local.month(), day_type, local.hour())
    }

    /// Start of the local day containing `ms`, in epoch ms.
    pub fn day_start(&self, ms: i64) -> i64 {
        self.local_floor(ms, false)
    }

    /// Start of the local month containing `ms`, in epoch ms.
    pub fn month_start(&self, ms: i64) -> i64 {
        self.local_floor(ms, true)
    }

    /// Start of the next local day (or month) after the one containing `ms`.
    pub fn next_start(&self, ms: i64, month: bool) -> i64 {
        let start = self.local_floor(ms, month);
        // Step well past the boundary (25 h covers DST days) and floor again.
        let mut probe = start
            + if month {
                32 * 86_400_000
            } else {
                25 * 3_600_000
            };
        if month {
            probe = self.local_floor(probe, true);
            // 32 days from the 1st always lands in the next month.
            return probe;
        }
        self.local_floor(probe, false)
    }

    fn local_floor(&self, ms: i64, month: bool) -> i64 {
        let Some(utc) = chrono::DateTime::from_timestamp_millis(ms) else {
            return ms;
        };
        let local = utc.with_timezone(&self.tz).date_naive();
        let date = if month {
            local.with_day(1).unwrap_or(local)
        } else {
            local
        };
        let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
        match self.tz.from_local_datetime(&midnight) {
            chrono::LocalResult::Single(t) => t.timestamp_millis(),
            chrono::LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
            // Midnight skipped by DST: the day starts at the first valid instant.
            chrono::LocalResult::None => self
                .tz
                .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
                .map(|t| t.timestamp_millis())
                .unwrap_or(ms),
        }
    }
}

fn parse_months(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() || s == "all" {
        return Ok((1..=12).collect());
    }
    let mut out = Vec::new();
    for part in s.split([',', ';', ' ']).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u32 = a.trim().parse().map_err(|_| format!("month `{part}`"))?;
        let b: u32 = b.trim().parse().map_err(|_| format!("month `{part}`"))?;
        if !(1..=12).contains(&a) || !(1..=12).contains(&b) {
            return Err(format!("month `{part}` (months are 1-12)"));
        }
        // `11-2` wraps around the year end.
        let mut m = a;
        loop {
            out.push(m);
            if m == b {
                break;
            }
            m = m % 12 + 1;
        }
    }
    Ok(out)
}

fn parse_day_types(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() || s == "all" {
        return Ok(vec![WEEKDAY, WEEKEND, HOLIDAY]);
    }
    s.split(['|', ',', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| {
            DAY_TYPES
                .iter()
                .position(|d| *d == p.trim())
                .map(|i| i as u32)
                .ok_or_else(|| format!("day type `{p}` (weekday, weekend, holiday or all)"))
        })
        .collect()
}

/// Loads `tariff.csv` into one price per (month, day type, hour).
pub fn load(path: &Path) -> Result<Vec<(TariffKey, F64)>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    parse(file, path)
}

/// Parses tariff CSV from any reader; `path` names it in errors.
#[allow(clippy::needless_range_loop)] // indices are months, day types and hours
pub fn parse(input: impl std::io::Read, path: &Path) -> Result<Vec<(TariffKey, F64)>, String> {
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let cols: Vec<String> = r
        .headers()
        .map_err(|e| format!("cannot read the header of `{}`: {e}", path.display()))?
        .iter()
        .map(|s| s.to_string())
        .collect();
    let col = |n: &str| cols.iter().position(|c| c == n);
    let (Some(ia), Some(ib), Some(ip)) = (col("start_hour"), col("end_hour"), col("price_per_kwh"))
    else {
        return Err(format!(
            "`{}` needs columns start_hour,end_hour,price_per_kwh (header: {})",
            path.display(),
            cols.join(",")
        ));
    };
    let (im, id) = (col("months"), col("day_types"));
    // prices[month-1][day_type][hour] = (price, line)
    let mut prices = [[[None::<(f64, usize)>; 24]; 3]; 12];
    let mut explicit_holiday = [false; 12];
    for (n, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let line = n + 2;
        let at = |msg: String| format!("`{}` line {line}: {msg}", path.display());
        let num = |i: usize| -> Result<f64, String> {
            let s = rec.get(i).unwrap_or("");
            s.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| at(format!("`{s}` is not a number")))
        };
        let (a, b, p) = (num(ia)?, num(ib)?, num(ip)?);
        if a.fract() != 0.0
            || b.fract() != 0.0
            || !(0.0..24.0).contains(&a)
            || !(a < b && b <= 24.0)
        {
            return Err(at(format!(
                "hours must be whole with 0 <= start_hour < end_hour <= 24, got {a}..{b}"
            )));
        }
        let months = match im {
            Some(i) => {
                parse_months(rec.get(i).unwrap_or("")).map_err(|e| at(format!("invalid {e}")))?
            }
            None => (1..=12).collect(),
        };
        let days = match id {
            Some(i) => {
                parse_day_types(rec.get(i).unwrap_or("")).map_err(|e| at(format!("invalid {e}")))?
            }
            None => vec![WEEKDAY, WEEKEND, HOLIDAY],
        };
        for &m in &months {
            for &d in &days {
                if d == HOLIDAY {
                    explicit_holiday[m as usize - 1] = true;
                }
                for h in a as usize..b as usize {
                    let slot = &mut prices[m as usize - 1][d as usize][h];
                    if let Some((_, other)) = slot {
                        return Err(at(format!(
                            "month {m}, {}, hour {h} is already priced on line {other} (overlapping periods)",
                            DAY_TYPES[d as usize]
                        )));
                    }
                    *slot = Some((p, line));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(12 * 3 * 24);
    for m in 0..12 {
        if !explicit_holiday[m] {
            prices[m][HOLIDAY as usize] = prices[m][WEEKEND as usize];
        }
        for d in 0..3 {
            let missing: Vec<String> = (0..24)
                .filter(|h| prices[m][d][*h].is_none())
                .map(|h| h.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "`{}`: no price for month {}, {}, hour(s) {} (gap in the tariff)",
                    path.display(),
                    m + 1,
                    DAY_TYPES[d],
                    missing.join(", ")
                ));
            }
            for h in 0..24 {
                let (p, _) = prices[m][d][h].unwrap_or((0.0, 0));
                out.push((key(m as u32 + 1, d as u32, h as u32), F64(p)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(s: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), s).unwrap();
        f
    }

    #[test]
    fn seasonal_weekday_tariff_with_holiday_fallback() {
        let f = write(
            "start_hour,end_hour,price_per_kwh,months,day_types\n\
             0,24,0.10,1-12,weekend\n\
             0,8,0.10,1-12,weekday\n8,20,0.25,6-8,weekday\n8,20,0.20,9-5,weekday\n20,24,0.10,all,weekday\n",
        );
        let t: std::collections::HashMap<_, _> = load(f.path()).unwrap().into_iter().collect();
        assert_eq!(t.len(), 12 * 3 * 24);
        assert_eq!(t[&key(7, WEEKDAY, 12)].0, 0.25);
        assert_eq!(t[&key(1, WEEKDAY, 12)].0, 0.20);
        assert_eq!(t[&key(7, WEEKEND, 12)].0, 0.10);
        assert_eq!(
            t[&key(7, HOLIDAY, 12)].0,
            0.10,
            "holidays fall back to weekend"
        );
    }

    #[test]
    fn gaps_and_overlaps_name_the_line() {
        let f = write("start_hour,end_hour,price_per_kwh\n0,12,0.1\n11,24,0.2\n");
        let e = load(f.path()).unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("hour 11") && e.contains("line 2"),
            "{e}"
        );
        let f = write("start_hour,end_hour,price_per_kwh,months\n0,24,0.1,1-11\n");
        let e = load(f.path()).unwrap_err();
        assert!(e.contains("month 12") && e.contains("gap"), "{e}");
        let f = write("start_hour,end_hour,price_per_kwh,day_types\n0,24,0.1,weekdays\n");
        let e = load(f.path()).unwrap_err();
        assert!(e.contains("line 2") && e.contains("weekdays"), "{e}");
    }

    #[test]
    fn local_time_and_dst() {
        let cal = Calendar {
            tz: "Europe/Berlin".parse().unwrap(),
            holidays: [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into(),
        };
        // 2026-07-01 10:30 UTC = 12:30 CEST, a Wednesday.
        let ms = chrono::Utc
            .with_ymd_and_hms(2026, 7, 1, 10, 30, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(cal.key_at(ms), key(7, WEEKDAY, 12));
        // 2026-12-25 (Friday, holiday) 08:00 UTC = 09:00 CET.
        let ms = chrono::Utc
            .with_ymd_and_hms(2026, 12, 25, 8, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert_eq!(cal.key_at(ms), key(12, HOLIDAY, 9));
        // The local day of 2026-03-29 (spring forward) is 23 h long.
        let ms = chrono::Utc
            .with_ymd_and_hms(2026, 3, 29, 12, 0, 0)
            .unwrap()
            .timestamp_millis();
        let (a, b) = (cal.day_start(ms), cal.next_start(ms, false));
        assert_eq!(b - a, 23 * 3_600_000);
        let m = cal.month_start(ms);
        assert_eq!(cal.next_start(m, true) - m, (31 * 24 - 1) * 3_600_000);
    }
}
