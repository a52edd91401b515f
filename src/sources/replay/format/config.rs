//! `[sources.format]` in a dataflow file: checked key by key, then against
//! the file's own header when the file is there (a column the block names
//! that the file does not have is an error at `validate`, not at run time).

use serde::Deserialize;

use super::{Format, Layout, QualityCodes, TimeFormat};
use crate::config::Loader;

#[derive(Deserialize, Debug, Default, schemars::JsonSchema)]
pub struct RawFormat {
    /// `csv` or `parquet` (by the file's extension when absent).
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub layout: Option<String>,
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub decimal: Option<String>,
    #[serde(default)]
    pub thousands: Option<String>,
    #[serde(default)]
    pub header_row: Option<i64>,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub time_format: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub quality: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub tag_pattern: Option<String>,
    #[serde(default)]
    pub quality_codes: Option<String>,
}

pub const FORMAT_KEYS: &[&str] = &[
    "file",
    "layout",
    "delimiter",
    "decimal",
    "thousands",
    "header_row",
    "timestamp",
    "time_format",
    "time_zone",
    "tag",
    "value",
    "quality",
    "tags",
    "tag_pattern",
    "quality_codes",
];

/// One character of a delimiter or separator (`"\t"` or `"tab"` for a tab).
fn one_byte(l: &mut Loader<'_>, key: &str, s: &str, what: &str) -> Option<u8> {
    let c = if s == "tab" { "\t" } else { s };
    match c.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Some(*b),
        _ => {
            l.at_value(
                key,
                format!("`{s}` is not one character for the {what}"),
                Some("one ASCII character, e.g. \",\", \";\", \"\\t\" or \"|\"".into()),
            );
            None
        }
    }
}

fn time_format(l: &mut Loader<'_>, key: &str, s: &str) -> TimeFormat {
    match s {
        "auto" => TimeFormat::Auto,
        "epoch_ms" => TimeFormat::EpochMs,
        "epoch_s" => TimeFormat::EpochS,
        "rfc3339" => TimeFormat::Rfc3339,
        p => {
            use chrono::format::{Item, StrftimeItems};
            let bad = StrftimeItems::new(p).any(|i| matches!(i, Item::Error));
            if bad || !p.contains('%') {
                l.at_value(
                    key,
                    format!("`{p}` is not a time format"),
                    Some(
                        "auto, epoch_ms, epoch_s, rfc3339, or a strftime pattern such as \"%d.%m.%Y %H:%M:%S\""
                            .into(),
                    ),
                );
            }
            TimeFormat::Pattern(p.to_string())
        }
    }
}

/// Validates a replay source's `format` table at `key` (`sources[0].format`);
/// the file kind it names, if any.
pub fn plan(l: &mut Loader<'_>, key: &str, v: toml::Value) -> Option<(Format, Option<String>)> {
    let r = l.de::<RawFormat>(key, v, FORMAT_KEYS)?;
    let k = |leaf: &str| format!("{key}.{leaf}");
    let mut f = Format::default();
    if let Some(file) = &r.file {
        l.one_of(&k("file"), file, &["csv", "parquet"], "file kind");
    }
    match r.layout.as_deref() {
        None | Some("long") => {}
        Some("wide") => f.layout = Layout::Wide,
        Some(other) => l.one_of(&k("layout"), other, &["long", "wide"], "layout"),
    }
    if let Some(d) = &r.delimiter {
        f.delimiter = one_byte(l, &k("delimiter"), d, "delimiter").unwrap_or(b',');
    }
    match r.decimal.as_deref() {
        None | Some(".") => {}
        Some(",") => f.decimal = b',',
        Some(other) => l.one_of(&k("decimal"), other, &[".", ","], "decimal separator"),
    }
    if f.decimal == f.delimiter {
        l.at_value(
            &k("decimal"),
            "the decimal separator is also the delimiter".into(),
            Some("exports with decimal commas use another delimiter: delimiter = \";\"".into()),
        );
    }
    if let Some(t) = &r.thousands {
        f.thousands = one_byte(l, &k("thousands"), t, "thousands separator");
        if f.thousands == Some(f.decimal) || f.thousands == Some(f.delimiter) {
            l.at_value(
                &k("thousands"),
                "the thousands separator must differ from the decimal separator and the delimiter"
                    .into(),
                None,
            );
        }
    }
    match r.header_row {
        None => {}
        Some(n) if (1..=1000).contains(&n) => f.header_row = n as usize,
        Some(n) => l.at_value(
            &k("header_row"),
            format!("header_row {n} is out of range"),
            Some("the header's line number, 1 for the first line (at most 1000)".into()),
        ),
    }
    f.timestamp = r.timestamp;
    if let Some(t) = &r.time_format {
        f.time_format = time_format(l, &k("time_format"), t);
    }
    if let Some(z) = &r.time_zone {
        match z.parse::<chrono_tz::Tz>() {
            Ok(tz) => f.time_zone = tz,
            Err(_) => l.at_value(
                &k("time_zone"),
                format!("unknown time zone `{z}`"),
                Some("use an IANA name such as `Europe/Berlin` or `America/Chicago`".into()),
            ),
        }
    }
    match r.quality_codes.as_deref() {
        None | Some("opc_ua") => {}
        Some("opc_da") => f.quality_codes = QualityCodes::OpcDa,
        Some(other) => l.one_of(
            &k("quality_codes"),
            other,
            &["opc_ua", "opc_da"],
            "quality code scheme",
        ),
    }
    let templated = r.quality.as_deref().is_some_and(|q| q.contains("{tag}"));
    match f.layout {
        Layout::Long => {
            for (leaf, set) in [
                ("tags", r.tags.is_some()),
                ("tag_pattern", r.tag_pattern.is_some()),
            ] {
                if set {
                    l.at(
                        &k(leaf),
                        format!("`{leaf}` is for layout = \"wide\""),
                        Some("a long file names its tag column with `tag`".into()),
                    );
                }
            }
            if templated {
                l.at_value(
                    &k("quality"),
                    "`{tag}` in the quality column is for layout = \"wide\"".into(),
                    Some("a long file's quality column is named as it is, e.g. \"Quality\"".into()),
                );
            }
            f.tag = r.tag.unwrap_or_else(|| "tag".into());
            f.value = r.value.unwrap_or_else(|| "value".into());
        }
        Layout::Wide => {
            for (leaf, set) in [("tag", r.tag.is_some()), ("value", r.value.is_some())] {
                if set {
                    l.at(
                        &k(leaf),
                        format!("`{leaf}` is for layout = \"long\""),
                        Some("a wide file's tag columns are `tags` or `tag_pattern`".into()),
                    );
                }
            }
            if r.quality.as_deref().is_some_and(|q| !q.is_empty()) && !templated {
                l.at_value(
                    &k("quality"),
                    "a wide file's quality columns are named after their tags".into(),
                    Some("write `{tag}` for the tag, e.g. \"{tag}.Quality\"".into()),
                );
            }
            if r.tags.is_some() && r.tag_pattern.is_some() {
                l.at(
                    &k("tag_pattern"),
                    "give `tags` or `tag_pattern`, not both".into(),
                    None,
                );
            }
            f.tags = r.tags.unwrap_or_default();
            if let Some(p) = &r.tag_pattern {
                match globset::Glob::new(p) {
                    Ok(g) => f.tag_pattern = Some(g.compile_matcher()),
                    Err(e) => l.at_value(
                        &k("tag_pattern"),
                        format!("`{p}` is not a pattern: {}", e.kind()),
                        Some("`*` matches any run of characters, `?` one: \"Line1/*\"".into()),
                    ),
                }
            }
        }
    }
    f.quality = r.quality;
    Some((f, r.file))
}

/// Where a header error belongs: the key naming the missing column.
pub fn header_key(message: &str) -> &'static str {
    [
        ("no time column", "timestamp"),
        ("no tag column", "tag"),
        ("no value column", "value"),
        ("no quality column", "quality"),
        ("no tag columns", "layout"),
        ("is not a header", "header_row"),
    ]
    .into_iter()
    .find(|(m, _)| message.contains(m))
    .map_or("delimiter", |(_, k)| k)
}
