//! `[sources.format]`: how a historian export is laid out, and reading its
//! cells: long (`time, tag, value[, quality]`) or wide (one time column,
//! one column per tag), any delimiter, decimal commas, local times.
//!
//! A replay source without a format block (or with one that says what the
//! plain long file already is) keeps the fast reader in `super`.

pub mod config;
pub mod inspect;
pub mod read;
pub mod records;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};

use crate::model::Quality;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One sample a row: a time, a tag, a value (and a quality) column.
    Long,
    /// One time a row: a column per tag (and per tag's quality).
    Wide,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// Epoch milliseconds, RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS[.fff]` in the zone.
    Auto,
    EpochMs,
    EpochS,
    Rfc3339,
    /// A chrono `strftime` pattern (`%d.%m.%Y %H:%M:%S%.f`), local to the zone
    /// unless it has an offset (`%z`).
    Pattern(String),
}

/// How a quality cell's number reads (words `good`, `uncertain`, `bad` always do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualityCodes {
    /// 0 good, 1 uncertain, 2 bad, or an OPC UA status code (top two bits).
    OpcUa,
    /// OPC DA / classic historians: 192 (0xC0) good, 64 (0x40) uncertain, 0 bad.
    OpcDa,
}

/// A validated `[sources.format]`.
#[derive(Clone, Debug)]
pub struct Format {
    pub layout: Layout,
    pub delimiter: u8,
    pub decimal: u8,
    pub thousands: Option<u8>,
    /// The header's line (1 = the first); lines before it are skipped.
    pub header_row: usize,
    /// The time column; none: `ts` (long) or the first column (wide).
    pub timestamp: Option<String>,
    pub time_format: TimeFormat,
    pub time_zone: chrono_tz::Tz,
    /// Long: the tag and value columns.
    pub tag: String,
    pub value: String,
    /// Long: the quality column (none: `quality` if the header has it).
    /// Wide: each tag's quality column, `{tag}` standing for the tag.
    pub quality: Option<String>,
    /// Wide: the tag columns by name (empty: every other column) or pattern.
    pub tags: Vec<String>,
    pub tag_pattern: Option<globset::GlobMatcher>,
    pub quality_codes: QualityCodes,
}

impl Default for Format {
    fn default() -> Format {
        Format {
            layout: Layout::Long,
            delimiter: b',',
            decimal: b'.',
            thousands: None,
            header_row: 1,
            timestamp: None,
            time_format: TimeFormat::Auto,
            time_zone: chrono_tz::UTC,
            tag: "tag".into(),
            value: "value".into(),
            quality: None,
            tags: Vec::new(),
            tag_pattern: None,
            quality_codes: QualityCodes::OpcUa,
        }
    }
}

/// Where each sample's cells are, found from the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Columns {
    Long {
        ts: usize,
        tag: usize,
        value: usize,
        quality: Option<usize>,
    },
    Wide {
        ts: usize,
        tags: Vec<WideColumn>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideColumn {
    pub value: usize,
    pub tag: String,
    pub quality: Option<usize>,
}

impl Format {
    /// Whether this is what the plain long file is: the fast reader reads it.
    pub fn is_plain(&self) -> bool {
        let d = Format::default();
        self.layout == Layout::Long
            && (
                self.delimiter,
                self.decimal,
                self.thousands,
                self.header_row,
            ) == (d.delimiter, d.decimal, d.thousands, d.header_row)
            && self.timestamp.as_deref().is_none_or(|t| t == "ts")
            && self.time_format == TimeFormat::Auto
            && self.time_zone == chrono_tz::UTC
            && (self.tag.as_str(), self.value.as_str()) == ("tag", "value")
            && self.quality.as_deref().is_none_or(|q| q == "quality")
            && self.quality_codes == QualityCodes::OpcUa
    }

    /// Finds the columns in a header (names trimmed); an error names what
    /// is missing and what the header has.
    pub fn columns(&self, header: &[&str]) -> Result<Columns, String> {
        let found = || {
            let names: Vec<String> = header.iter().take(12).map(|h| format!("`{h}`")).collect();
            let more = if header.len() > 12 { ", …" } else { "" };
            format!("the header has {}{more}", names.join(", "))
        };
        let pos = |name: &str| header.iter().position(|h| *h == name);
        let need = |what: &str, name: &str| {
            pos(name).ok_or_else(|| format!("no {what} column `{name}`; {}", found()))
        };
        match self.layout {
            Layout::Long => {
                let ts = need("time", self.timestamp.as_deref().unwrap_or("ts"))?;
                let tag = need("tag", &self.tag)?;
                let value = need("value", &self.value)?;
                let quality = match self.quality.as_deref() {
                    None => pos("quality"),
                    Some("") => None,
                    Some(q) => Some(need("quality", q)?),
                };
                Ok(Columns::Long {
                    ts,
                    tag,
                    value,
                    quality,
                })
            }
            Layout::Wide => {
                let ts = match &self.timestamp {
                    Some(t) => need("time", t)?,
                    None if header.is_empty() => return Err("the header is empty".into()),
                    None => 0,
                };
                let template = self.quality.as_deref().filter(|q| !q.is_empty());
                let quality_of = |tag: &str| template.map(|q| q.replace("{tag}", tag));
                // Every column's quality column name, once (a wide export
                // has thousands of columns).
                let qualities: std::collections::HashSet<String> =
                    header.iter().filter_map(|t| quality_of(t)).collect();
                let is_quality = |name: &str| qualities.contains(name);
                let mut tags = Vec::new();
                let chosen: Vec<usize> = if self.tags.is_empty() {
                    (0..header.len())
                        .filter(|&i| i != ts && !is_quality(header[i]))
                        .filter(|&i| {
                            self.tag_pattern
                                .as_ref()
                                .is_none_or(|p| p.is_match(header[i]))
                        })
                        .collect()
                } else {
                    let mut v = Vec::new();
                    for t in &self.tags {
                        v.push(need("tag", t)?);
                    }
                    v
                };
                for i in chosen {
                    let quality = match quality_of(header[i]) {
                        Some(q) => Some(need("quality", &q)?),
                        None => None,
                    };
                    tags.push(WideColumn {
                        value: i,
                        tag: header[i].to_string(),
                        quality,
                    });
                }
                if tags.is_empty() {
                    return Err(format!("no tag columns; {}", found()));
                }
                Ok(Columns::Wide { ts, tags })
            }
        }
    }

    /// A clock for this format's time column.
    pub fn clock(&self) -> Clock {
        Clock {
            format: self.time_format.clone(),
            zone: self.time_zone,
            last: None,
        }
    }

    /// A value cell as a number (`None`: not one).
    pub fn number(&self, cell: &str, buf: &mut String) -> Option<f64> {
        let cell = cell.trim();
        if self.decimal == b'.' && self.thousands.is_none() {
            return cell.parse().ok();
        }
        buf.clear();
        for c in cell.chars() {
            if Some(c as u32) == self.thousands.map(u32::from) {
                continue;
            }
            if c as u32 == self.decimal as u32 {
                buf.push('.');
            } else if c == '.' && self.decimal != b'.' {
                // A point is not the decimal separator here: not a number.
                return None;
            } else {
                buf.push(c);
            }
        }
        buf.parse().ok()
    }

    /// A quality cell (empty: good).
    pub fn quality(&self, cell: &str) -> Option<Quality> {
        quality_of(cell, self.quality_codes)
    }
}

/// A quality cell: a code read by `codes`, or a word.
pub fn quality_of(cell: &str, codes: QualityCodes) -> Option<Quality> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Some(Quality::Good);
    }
    if let Ok(code) = cell.parse::<u64>() {
        return quality_code(code, codes);
    }
    let word = cell.to_ascii_lowercase();
    [
        ("good", Quality::Good),
        ("uncertain", Quality::Uncertain),
        ("bad", Quality::Bad),
    ]
    .into_iter()
    .find(|(w, _)| word.starts_with(w))
    .map(|(_, q)| q)
}

/// A quality code read by `codes`.
pub fn quality_code(code: u64, codes: QualityCodes) -> Option<Quality> {
    match codes {
        QualityCodes::OpcUa => Quality::from_code(code),
        QualityCodes::OpcDa if code <= 0xFFFF => Some(match code & 0xC0 {
            0xC0 => Quality::Good,
            0x40 => Quality::Uncertain,
            _ => Quality::Bad,
        }),
        QualityCodes::OpcDa => None,
    }
}

/// Reads a time column's cells. Local times in a zone with daylight saving
/// repeat an hour each autumn: such a time is taken as the occurrence
/// nearer the previous row's (exports are in time order), the first one
/// at the start.
pub struct Clock {
    format: TimeFormat,
    zone: chrono_tz::Tz,
    last: Option<i64>,
}

/// Naive layouts `auto` tries after epoch numbers and RFC 3339.
const AUTO_NAIVE: &[&str] = &["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];

impl Clock {
    /// Epoch milliseconds of a time cell.
    pub fn parse(&mut self, cell: &str) -> Result<i64, String> {
        let s = cell.trim();
        let ms = match &self.format {
            TimeFormat::EpochMs => s
                .parse::<i64>()
                .map_err(|_| "not epoch milliseconds".to_string()),
            TimeFormat::EpochS => epoch_seconds(s).ok_or_else(|| "not epoch seconds".to_string()),
            TimeFormat::Rfc3339 => rfc3339(s).ok_or_else(|| "not an RFC 3339 time".to_string()),
            TimeFormat::Auto => self.auto(s),
            TimeFormat::Pattern(p) => self.pattern(s, p),
        }?;
        self.last = Some(ms);
        Ok(ms)
    }

    fn auto(&self, s: &str) -> Result<i64, String> {
        // What the fast reader reads: epoch milliseconds or RFC 3339.
        if let Some(ms) = crate::ingest::normalize::parse_ts(s).or_else(|| spaced_offset(s)) {
            return Ok(ms);
        }
        for p in AUTO_NAIVE {
            if let Ok(n) = NaiveDateTime::parse_from_str(s, p) {
                return self.local(n);
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return self.local(d.and_hms_opt(0, 0, 0).expect("midnight"));
        }
        Err("not a time (epoch milliseconds, RFC 3339 or YYYY-MM-DD HH:MM:SS)".into())
    }

    fn pattern(&self, s: &str, p: &str) -> Result<i64, String> {
        if p.contains("%z") || p.contains("%:z") || p.contains("%#z") {
            return DateTime::parse_from_str(s, p)
                .map(|d| d.timestamp_millis())
                .map_err(|e| format!("not a time in `{p}` ({e})"));
        }
        match NaiveDateTime::parse_from_str(s, p) {
            Ok(n) => self.local(n),
            Err(e) => match NaiveDate::parse_from_str(s, p) {
                Ok(d) => self.local(d.and_hms_opt(0, 0, 0).expect("midnight")),
                Err(_) => Err(format!("not a time in `{p}` ({e})")),
            },
        }
    }

    /// A local time in the zone.
    fn local(&self, n: NaiveDateTime) -> Result<i64, String> {
        use chrono::LocalResult;
        match self.zone.from_local_datetime(&n) {
            LocalResult::Single(t) => Ok(t.timestamp_millis()),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.timestamp_millis(), b.timestamp_millis());
                Ok(match self.last {
                    Some(last) if (b - last).abs() < (a - last).abs() => b,
                    _ => a,
                })
            }
            LocalResult::None => Err(format!(
                "{n} does not exist in {} (clocks went forward)",
                self.zone.name()
            )),
        }
    }
}

fn rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
        .or_else(|| spaced_offset(s))
}

/// `2026-01-05 08:35:00+01:00`: RFC 3339 with a space and an offset.
fn spaced_offset(s: &str) -> Option<i64> {
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z")
        .ok()
        .map(|d| d.timestamp_millis())
}

/// `1767596100` or `1767596100.032` seconds as milliseconds.
fn epoch_seconds(s: &str) -> Option<i64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = format!("{frac:0<3}");
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        ms[..3].parse().ok()?
    };
    secs.checked_mul(1000)?
        .checked_add(if secs < 0 { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn times_in_every_format() {
        let mut c = Format::default().clock();
        assert_eq!(c.parse("1767596100032"), Ok(1_767_596_100_032));
        assert_eq!(c.parse("2026-01-05T07:35:00.032Z"), Ok(1_767_598_500_032));
        assert_eq!(c.parse("2026-01-05 07:35:00.032"), Ok(1_767_598_500_032));
        assert_eq!(c.parse("2026-01-05 08:35:00+01:00"), Ok(1_767_598_500_000));
        assert!(c.parse("05.01.2026").is_err());
        let f = Format {
            time_format: TimeFormat::Pattern("%d.%m.%Y %H:%M:%S,%3f".into()),
            time_zone: chrono_tz::Europe::Berlin,
            ..Format::default()
        };
        let mut c = f.clock();
        // Winter: UTC+1; milliseconds after a comma.
        assert_eq!(c.parse("05.01.2026 08:35:00,032"), Ok(1_767_598_500_032));
        let mut s = Format {
            time_format: TimeFormat::EpochS,
            ..Format::default()
        }
        .clock();
        assert_eq!(s.parse("1767596100.032"), Ok(1_767_596_100_032));
        assert_eq!(s.parse("1767596100"), Ok(1_767_596_100_000));
    }

    /// Berlin's clocks went back at 03:00 on 2026-10-25: 02:00–02:59 came
    /// twice (UTC 00:00–00:59, then 01:00–01:59); 02:30 on 2026-03-29 never was.
    #[test]
    fn local_times_through_daylight_saving() {
        let f = Format {
            time_zone: chrono_tz::Europe::Berlin,
            ..Format::default()
        };
        let mut c = f.clock();
        let rows = [
            ("2026-10-25 01:59:00", "2026-10-24T23:59:00Z"),
            ("2026-10-25 02:10:00", "2026-10-25T00:10:00Z"),
            ("2026-10-25 02:09:58", "2026-10-25T00:09:58Z"), // a little late: the first pass
            ("2026-10-25 02:59:00", "2026-10-25T00:59:00Z"),
            ("2026-10-25 02:05:00", "2026-10-25T01:05:00Z"), // the second pass
            ("2026-10-25 02:30:00", "2026-10-25T01:30:00Z"),
            ("2026-10-25 03:00:00", "2026-10-25T02:00:00Z"),
        ];
        for (local, want) in rows {
            assert_eq!(c.parse(local), Ok(utc(want)), "{local}");
        }
        let e = c.parse("2026-03-29 02:30:00").unwrap_err();
        assert!(e.contains("does not exist in Europe/Berlin"), "{e}");
    }

    #[test]
    fn numbers_with_decimal_commas_and_thousands() {
        let f = Format {
            decimal: b',',
            thousands: Some(b'.'),
            ..Format::default()
        };
        let mut b = String::new();
        assert_eq!(f.number(" 1.234,5 ", &mut b), Some(1234.5));
        assert_eq!(f.number("-0,25", &mut b), Some(-0.25));
        assert_eq!(f.number("Bad Input", &mut b), None);
        let f = Format {
            decimal: b',',
            ..Format::default()
        };
        assert_eq!(f.number("1.5", &mut b), None, "a point is no decimal here");
        assert_eq!(Format::default().number("1.5", &mut b), Some(1.5));
    }

    #[test]
    fn quality_codes_and_words() {
        let q = |s, c| quality_of(s, c);
        assert_eq!(q("", QualityCodes::OpcUa), Some(Quality::Good));
        assert_eq!(q("2", QualityCodes::OpcUa), Some(Quality::Bad));
        assert_eq!(
            q("1073741824", QualityCodes::OpcUa),
            Some(Quality::Uncertain)
        );
        assert_eq!(q("192", QualityCodes::OpcDa), Some(Quality::Good));
        assert_eq!(q("86", QualityCodes::OpcDa), Some(Quality::Uncertain));
        assert_eq!(q("24", QualityCodes::OpcDa), Some(Quality::Bad));
        assert_eq!(q("Good", QualityCodes::OpcDa), Some(Quality::Good));
        assert_eq!(
            q("UNCERTAIN_LAST_USABLE", QualityCodes::OpcUa),
            Some(Quality::Uncertain)
        );
        assert_eq!(
            q("Bad_NotConnected", QualityCodes::OpcUa),
            Some(Quality::Bad)
        );
        assert_eq!(q("maybe", QualityCodes::OpcUa), None);
    }

    #[test]
    fn columns_of_long_and_wide_headers() {
        let f = Format {
            timestamp: Some("Zeit".into()),
            tag: "Name".into(),
            value: "Wert".into(),
            quality: Some("Status".into()),
            ..Format::default()
        };
        assert_eq!(
            f.columns(&["Name", "Zeit", "Wert", "Status"]),
            Ok(Columns::Long {
                ts: 1,
                tag: 0,
                value: 2,
                quality: Some(3)
            })
        );
        let e = f.columns(&["Name", "Time", "Wert"]).unwrap_err();
        assert!(
            e.contains("no time column `Zeit`") && e.contains("`Time`"),
            "{e}"
        );
        let wide = Format {
            layout: Layout::Wide,
            quality: Some("{tag}.Q".into()),
            ..Format::default()
        };
        let Ok(Columns::Wide { ts, tags }) = wide.columns(&["t", "a", "a.Q", "b,c", "b,c.Q"])
        else {
            panic!()
        };
        assert_eq!(ts, 0);
        assert_eq!(
            tags,
            vec![
                WideColumn {
                    value: 1,
                    tag: "a".into(),
                    quality: Some(2)
                },
                WideColumn {
                    value: 3,
                    tag: "b,c".into(),
                    quality: Some(4)
                },
            ]
        );
        let e = wide.columns(&["t", "a", "b", "b.Q"]).unwrap_err();
        assert!(e.contains("no quality column `a.Q`"), "{e}");
    }
}
