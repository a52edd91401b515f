//! Action status updates from a JSON-lines file (tailed in `--follow`).
//!
//! One update per line:
//! `{"action_id":"…","status":"acknowledged|done|rejected","at":…,"by":"…","note":"…"}`.
//! `at` is epoch milliseconds or RFC 3339 (default: when the line is read);
//! `ack` and `reject` are accepted for the CLI verbs. `plantflow action …`
//! appends lines here. A line that does not parse is dead-lettered with the
//! reason; it never stops the run.

use std::io::{BufRead, Seek, SeekFrom};
use std::path::Path;

use crate::model::canonical_status;
use crate::model::{now_ms, DeadLetter, StatusUpdate};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    action_id: String,
    status: String,
    #[serde(default)]
    at: Option<serde_json::Value>,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Parses a time given as epoch ms (number or digits) or RFC 3339.
pub fn parse_time(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("`at` {n} is not epoch milliseconds")),
        serde_json::Value::String(s) => parse_time_str(s),
        other => Err(format!("`at` must be epoch ms or RFC 3339, got {other}")),
    }
}

pub fn parse_time_str(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.timestamp_millis())
        .map_err(|_| format!("`{s}` is neither epoch milliseconds nor RFC 3339"))
}

/// Parses one line; `Err` is the dead-letter reason.
pub fn parse_line(line: &str) -> Result<StatusUpdate, String> {
    let l: Line =
        serde_json::from_str(line).map_err(|e| format!("malformed status update: {e}"))?;
    if l.action_id.trim().is_empty() {
        return Err("status update without an action_id".into());
    }
    let status = canonical_status(&l.status).ok_or_else(|| {
        format!(
            "unknown status `{}` (acknowledged, done or rejected)",
            l.status
        )
    })?;
    let at = match &l.at {
        Some(v) => parse_time(v)?,
        None => now_ms(),
    };
    Ok(StatusUpdate {
        action_id: l.action_id,
        status: status.to_string(),
        at,
        by: l.by.unwrap_or_default(),
        note: l.note.unwrap_or_default(),
        seq: 0,
        raw: line.to_string(),
    })
}

/// Reads complete lines from `offset`; returns updates, dead letters and the new offset.
pub fn read_from(
    path: &Path,
    offset: u64,
) -> Result<(Vec<StatusUpdate>, Vec<DeadLetter>, u64), String> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), Vec::new(), 0))
        }
        Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = if len < offset { 0 } else { offset };
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let (mut ups, mut dead) = (Vec::new(), Vec::new());
    let mut pos = offset;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        if n == 0 || !buf.ends_with(b"\n") {
            break; // a partial last line is read when it is complete
        }
        pos += n as u64;
        // A line that is not UTF-8 is a dead letter, not the end of the file.
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                let lossy = String::from_utf8_lossy(&buf);
                dead.push(DeadLetter::text(
                    "lifecycle",
                    format!("not UTF-8 (invalid byte at {})", e.valid_up_to()),
                    lossy.trim(),
                ));
                continue;
            }
        };
        let line = text.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(u) => ups.push(u),
            Err(reason) => dead.push(DeadLetter::text("lifecycle", reason, line)),
        }
    }
    Ok((ups, dead, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_is_a_dead_letter_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.jsonl");
        let mut bytes =
            b"{\"action_id\":\"a1\",\"status\":\"ack\",\"at\":\"2026-01-05T10:00:00Z\"}\n".to_vec();
        bytes.extend_from_slice(b"{\"action_id\":\"a\xff\"}\n");
        bytes.extend_from_slice(
            b"{\"action_id\":\"a2\",\"status\":\"done\",\"at\":\"2026-01-05T11:00:00Z\"}\n",
        );
        std::fs::write(&path, &bytes).unwrap();
        let (ups, dead, pos) = read_from(&path, 0).unwrap();
        let ids: Vec<&str> = ups.iter().map(|u| u.action_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2"]);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "not UTF-8 (invalid byte at 15)");
        assert_eq!(dead[0].raw, "{\"action_id\":\"a\u{fffd}\"}");
        assert_eq!(pos, bytes.len() as u64);
    }

    #[test]
    fn parses_and_rejects() {
        let u = parse_line(
            r#"{"action_id":"ab","status":"ack","at":"2026-01-05T10:00:00Z","by":"ann"}"#,
        )
        .unwrap();
        assert_eq!(
            (u.status.as_str(), u.at),
            ("acknowledged", 1_767_607_200_000)
        );
        assert!(parse_line(r#"{"action_id":"ab","status":"closed","at":1}"#)
            .unwrap_err()
            .contains("unknown status"));
        assert!(parse_line("{not json").unwrap_err().contains("malformed"));
        assert!(parse_line(r#"{"action_id":"ab","status":"done","at":"yesterday"}"#).is_err());
        assert!(parse_line(r#"{"action_id":"ab","status":"done","whom":"x"}"#).is_err());
    }
}
