//! Text formatting shared by the HTML and the charts: escaping, grouped
//! numbers, significant digits, UTC times. Everything here is total: no input
//! (NaN, out-of-range timestamps, odd JSON) makes it panic.

use chrono::DateTime;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234.5` → `1,234.50` (with `decimals` = 2).
pub(crate) fn num(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s.as_str(), None),
    };
    let mut out = String::with_capacity(s.len() + s.len() / 3 + 1);
    // "-0.00" reads as a sign error: only show the sign when something is left.
    if x < 0.0 && s.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
        out.push('-');
    }
    let n = int.len();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (n - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A money amount: two decimals and the (escaped) currency.
pub(crate) fn money(x: f64, currency: &str) -> String {
    if currency.is_empty() {
        num(x, 2)
    } else {
        format!("{} {}", num(x, 2), esc(currency))
    }
}

/// A number to three significant digits, never dropping integer digits:
/// `12.34567` → `12.3`, `0.0012345` → `0.00123`, `1234.56` → `1235`.
pub(crate) fn sig3(x: f64) -> String {
    if !x.is_finite() {
        return num(x, 0);
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor();
    if !(-6.0..15.0).contains(&mag) {
        return format!("{x:.2e}");
    }
    let decimals = (2.0 - mag).max(0.0) as usize;
    let s = format!("{x:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A ratio as a percentage with one decimal; `None` → an en dash.
pub(crate) fn pct(x: Option<f64>) -> String {
    match x {
        Some(v) => format!("{} %", num(v * 100.0, 1)),
        None => "–".into(),
    }
}

/// An optional number with `decimals`; `None` → an en dash.
pub(crate) fn opt_num(x: Option<f64>, decimals: usize) -> String {
    x.map(|v| num(v, decimals)).unwrap_or_else(|| "–".into())
}

/// Epoch milliseconds as UTC with a chrono format string; out of range → the raw number.
pub(crate) fn time(ms: i64, format: &str) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format(format).to_string(),
        None => format!("{ms} ms"),
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM` (UTC).
pub(crate) fn minute(ms: i64) -> String {
    time(ms, "%Y-%m-%d %H:%M")
}

/// `not_verified` → `not verified`.
pub(crate) fn human(s: &str) -> String {
    s.replace('_', " ")
}

/// The `measures` object of an action's evidence as `k=v` pairs (escaped),
/// numbers to three significant digits. Evidence that is not JSON is shown
/// as a short escaped excerpt rather than failing the report.
pub(crate) fn evidence_summary(evidence: &str) -> String {
    if evidence.trim().is_empty() {
        return String::new();
    }
    let v: serde_json::Value = match serde_json::from_str(evidence) {
        Ok(v) => v,
        Err(_) => {
            let short: String = evidence.chars().take(80).collect();
            let more = if evidence.chars().count() > 80 {
                "…"
            } else {
                ""
            };
            return format!("(not JSON) {}{more}", esc(&short));
        }
    };
    let Some(measures) = v.get("measures").and_then(|m| m.as_object()) else {
        return String::new();
    };
    measures
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(&json_value(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn json_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => sig3(f),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fmt_numbers() {
        assert_eq!(num(1234.5, 2), "1,234.50");
        assert_eq!(num(-1234567.891, 1), "-1,234,567.9");
        assert_eq!(num(999.0, 0), "999");
        assert_eq!(num(-0.001, 2), "0.00");
        assert_eq!(num(f64::NAN, 2), "NaN");
        assert_eq!(sig3(12.34567), "12.3");
        assert_eq!(sig3(0.0012345), "0.00123");
        assert_eq!(sig3(1234.56), "1235");
        assert_eq!(sig3(2.0), "2");
        assert_eq!(sig3(-0.5), "-0.5");
        assert_eq!(pct(Some(0.1234)), "12.3 %");
        assert_eq!(time(i64::MAX, "%Y"), format!("{} ms", i64::MAX));
    }

    #[test]
    fn report_fmt_evidence() {
        let e = r#"{"measures":{"kw":12.34567,"n":3,"note":"<b>"},"history":[]}"#;
        assert_eq!(evidence_summary(e), "kw=12.3 n=3 note=&lt;b&gt;");
        assert!(evidence_summary("<not json>").starts_with("(not JSON) &lt;not json&gt;"));
        assert_eq!(evidence_summary(r#"{"measures":null}"#), "");
    }
}
