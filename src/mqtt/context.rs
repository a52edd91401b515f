//! Context tables over MQTT: a message edits one table, and the edit flows
//! into the same differential collection as the file, so the affected
//! windows are corrected exactly as after a file change.
//!
//! Payloads are a JSON object or an array of objects:
//! - `assets`: `{"op":"upsert","tag":..,"asset":..,"site":..,"line":..,"kind":..,"standby_kw":..}`
//!   (extra columns by name), `{"op":"delete","tag":..}`.
//! - `production` (key `line`) and `maintenance` (key `asset`):
//!   a whole interval `{"line":..,"start":ts,"end":ts,"units":n}`,
//!   a run start `{"line":..,"event":"start","ts":ts}` (open for at most
//!   [`OPEN_HORIZON_MS`] until its stop arrives), a stop
//!   `{"line":..,"event":"stop","ts":ts,"units":n}`, or
//!   `{"op":"delete","line":..,"start":ts}`.
//! - `tariff`: the whole tariff, `[{"start_hour":0,"end_hour":7,"price_per_kwh":0.12,"months":"..","day_types":".."}, ...]`
//!   (same columns and checks as `tariff.csv`); it replaces the previous one.

use serde_json::{Map, Value};

use super::payload::{timestamp, TsUnit};
pub use crate::model::edit::{Edit, Table, OPEN_HORIZON_MS};

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    m.get(k).ok_or_else(|| format!("no `{k}` field"))
}

fn string(m: &Map<String, Value>, k: &str) -> Result<String, String> {
    match field(m, k)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(format!("wrong type: `{k}` must be a non-empty string")),
    }
}

fn ts(m: &Map<String, Value>, k: &str) -> Result<i64, String> {
    timestamp(field(m, k)?, TsUnit::Auto).map_err(|e| format!("`{k}`: {e}"))
}

fn units(m: &Map<String, Value>) -> Result<Option<f64>, String> {
    match m.get("units") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| "`units` is not a finite number".to_string()),
        Some(_) => Err("wrong type: `units` must be a number".into()),
    }
}

/// Decodes a context message for `table`.
pub fn decode(table: Table, payload: &[u8]) -> Result<Vec<Edit>, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("malformed JSON: {e}"))?;
    if table == Table::Tariff {
        let rows = match &v {
            Value::Array(a) => a,
            Value::Object(o) => match o.get("rows") {
                Some(Value::Array(a)) => a,
                _ => return Err("a tariff message is an array of rows or {\"rows\": [...]}".into()),
            },
            _ => return Err("a tariff message is an array of rows".into()),
        };
        let cols = [
            "start_hour",
            "end_hour",
            "price_per_kwh",
            "months",
            "day_types",
        ];
        let mut csv = cols.join(",");
        csv.push('\n');
        for (i, r) in rows.iter().enumerate() {
            let Value::Object(m) = r else {
                return Err(format!("row {i}: expected an object"));
            };
            let cells: Vec<String> = cols
                .iter()
                .map(|c| m.get(*c).and_then(text).unwrap_or_default())
                .map(|s| {
                    if s.contains(',') || s.contains('"') {
                        format!("\"{}\"", s.replace('"', "\"\""))
                    } else {
                        s
                    }
                })
                .collect();
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        return Ok(vec![Edit::Tariff(csv)]);
    }
    let items: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        let Value::Object(m) = it else {
            return Err(format!("element {i}: expected an object"));
        };
        let op = match m.get("op") {
            None => "upsert".to_string(),
            Some(Value::String(s)) => s.to_ascii_lowercase(),
            Some(_) => return Err("wrong type: `op` must be a string".into()),
        };
        let e = match table {
            Table::Assets => match op.as_str() {
                "upsert" => Edit::UpsertAsset(
                    m.iter()
                        .filter(|(k, _)| *k != "op")
                        .map(|(k, v)| {
                            text(v).map(|t| (k.clone(), t)).ok_or_else(|| {
                                format!("wrong type: `{k}` must be a string or number")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                ),
                "delete" => Edit::DeleteAsset(string(m, "tag")?),
                other => return Err(format!("unknown op `{other}` (upsert or delete)")),
            },
            Table::Production | Table::Maintenance => {
                let key = string(m, table.key())?;
                match (op.as_str(), m.get("event").and_then(Value::as_str)) {
                    ("delete", _) => Edit::DeleteInterval {
                        table,
                        key,
                        start: ts(m, "start")?,
                    },
                    ("upsert", Some("start")) => Edit::Start {
                        table,
                        key,
                        ts: ts(m, "ts")?,
                    },
                    ("upsert", Some("stop")) => Edit::Stop {
                        table,
                        key,
                        ts: ts(m, "ts")?,
                        units: units(m)?,
                    },
                    ("upsert", Some(other)) => {
                        return Err(format!("unknown event `{other}` (start or stop)"))
                    }
                    ("upsert", None) => {
                        let (start, end) = (ts(m, "start")?, ts(m, "end")?);
                        if end < start {
                            return Err("`end` is before `start`".into());
                        }
                        Edit::Interval {
                            table,
                            key,
                            start,
                            end,
                            units: units(m)?,
                        }
                    }
                    (other, _) => return Err(format!("unknown op `{other}` (upsert or delete)")),
                }
            }
            Table::Tariff => unreachable!("handled above"),
        };
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits() {
        let e = decode(
            Table::Production,
            br#"{"line":"L1","event":"start","ts":1767596100000}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            vec![Edit::Start {
                table: Table::Production,
                key: "L1".into(),
                ts: 1_767_596_100_000
            }]
        );
        let e = decode(
            Table::Maintenance,
            br#"[{"asset":"a","start":"2026-01-05T00:00:00Z","end":"2026-01-05T01:00:00Z"}]"#,
        )
        .unwrap();
        assert_eq!(
            e,
            vec![Edit::Interval {
                table: Table::Maintenance,
                key: "a".into(),
                start: 1_767_571_200_000,
                end: 1_767_574_800_000,
                units: None
            }]
        );
        let e = decode(
            Table::Assets,
            br#"{"tag":"t","asset":"a","site":"s","line":"l","kind":"motor","standby_kw":2.5}"#,
        )
        .unwrap();
        assert!(
            matches!(&e[0], Edit::UpsertAsset(f) if f.contains(&("standby_kw".to_string(), "2.5".to_string())))
        );
        let e = decode(
            Table::Tariff,
            br#"[{"start_hour":0,"end_hour":24,"price_per_kwh":0.1}]"#,
        )
        .unwrap();
        assert_eq!(
            e,
            vec![Edit::Tariff(
                "start_hour,end_hour,price_per_kwh,months,day_types\n0,24,0.1,,\n".into()
            )]
        );
    }

    #[test]
    fn bad_edits() {
        assert!(decode(Table::Production, b"{")
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert!(decode(Table::Production, br#"{"event":"start","ts":1}"#)
            .unwrap_err()
            .contains("no `line`"));
        assert!(
            decode(Table::Production, br#"{"line":"L","event":"pause","ts":1}"#)
                .unwrap_err()
                .contains("unknown event")
        );
        assert!(
            decode(Table::Production, br#"{"line":"L","start":5,"end":1}"#)
                .unwrap_err()
                .contains("before")
        );
        assert!(decode(Table::Assets, br#"{"op":"merge"}"#)
            .unwrap_err()
            .contains("unknown op"));
        assert!(decode(Table::Tariff, br#"{"x":1}"#).is_err());
    }
}
