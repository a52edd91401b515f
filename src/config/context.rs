//! `[context]` and `timezone`: the context tables' files, the assets file's
//! extra columns, the tariff's holidays and the plant's calendar.

use std::path::PathBuf;

use super::loader::Loader;
use super::plan::{Calendar, ContextPlan};
use super::raw::RawContext;

const CONTEXT_KEYS: &[&str] = &["assets", "tariff", "production", "maintenance"];

/// Validates `[context]` (the file paths and what is in them) and the
/// plant's `timezone`.
pub(super) fn context(
    l: &mut Loader<'_>,
    raw: toml::Value,
    timezone: Option<&str>,
) -> (ContextPlan, Calendar) {
    let ctx: Option<RawContext> = l.de("context", raw, CONTEXT_KEYS);
    let (assets, tariff, production, maintenance) = match &ctx {
        Some(c) => (
            l.file_exists("context.assets.path", &c.assets.path),
            l.file_exists("context.tariff.path", &c.tariff.path),
            c.production
                .as_ref()
                .map(|t| l.file_exists("context.production.path", &t.path)),
            c.maintenance
                .as_ref()
                .map(|t| l.file_exists("context.maintenance.path", &t.path)),
        ),
        None => (PathBuf::new(), PathBuf::new(), None, None),
    };
    let mut asset_extra = Vec::new();
    if assets.is_file() {
        match super::tables::asset_header(&assets) {
            Ok(extra) => asset_extra = extra,
            Err(e) => l.at_value("context.assets.path", e, None),
        }
    }
    if tariff.is_file() {
        if let Err(e) = crate::model::tariff::load(&tariff) {
            l.at_value("context.tariff.path", e, None);
        }
    }
    let mut holidays = Vec::new();
    if let Some(c) = &ctx {
        for (i, h) in c.tariff.holidays.iter().enumerate() {
            match chrono::NaiveDate::parse_from_str(h, "%Y-%m-%d") {
                Ok(d) => holidays.push(d),
                Err(_) => l.at_value(
                    &format!("context.tariff.holidays[{i}]"),
                    format!("`{h}` is not a date"),
                    Some("write local dates as YYYY-MM-DD".into()),
                ),
            }
        }
    }
    let tz: chrono_tz::Tz = match timezone {
        None => chrono_tz::UTC,
        Some(name) => match name.parse() {
            Ok(tz) => tz,
            Err(_) => {
                l.at_value(
                    "timezone",
                    format!("unknown timezone `{name}`"),
                    Some("use an IANA name such as `Europe/Berlin` or `America/Chicago`".into()),
                );
                chrono_tz::UTC
            }
        },
    };
    let calendar = Calendar {
        tz,
        holidays: holidays.iter().copied().collect(),
    };
    let context = ContextPlan {
        assets,
        tariff,
        holidays,
        production,
        maintenance,
        asset_extra,
    };
    (context, calendar)
}
