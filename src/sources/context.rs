//! Context tables from CSV files: assets, tariff, production runs, maintenance.
//!
//! Each loader returns whole-table snapshots; in `--follow` mode the
//! [`watch`](crate::run) loop reloads a changed file and the engine applies
//! the difference between snapshots, so only affected rows are retracted and
//! re-emitted. A file that fails to load keeps the previous snapshot.

use std::collections::HashMap;
use std::path::Path;

use crate::model::{AssetRow, Scalar, F64};
use crate::value::expr::ColType;

/// A production run (half-open `[start_ms, end_ms)`) or a maintenance window.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Interval {
    /// Line (production) or asset (maintenance).
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Produced quantity of a run (`units` column), the M&V driver.
    pub units: Option<F64>,
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, String> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn headers(r: &mut csv::Reader<std::fs::File>, path: &Path) -> Result<Vec<String>, String> {
    Ok(r.headers()
        .map_err(|e| format!("cannot read the header of `{}`: {e}", path.display()))?
        .iter()
        .map(|s| s.to_string())
        .collect())
}

fn require(cols: &[String], need: &[&str], path: &Path) -> Result<Vec<usize>, String> {
    need.iter()
        .map(|n| {
            cols.iter().position(|c| c == n).ok_or_else(|| {
                format!(
                    "`{}` has no `{n}` column (header: {})",
                    path.display(),
                    cols.join(",")
                )
            })
        })
        .collect()
}

/// Reads the assets header and infers the types of extra columns
/// (number when every value parses as one, else string).
pub fn asset_header(path: &Path) -> Result<Vec<(String, ColType)>, String> {
    let mut r = reader(path)?;
    let cols = headers(&mut r, path)?;
    require(&cols, crate::config::ASSET_COLUMNS, path)?;
    let extra: Vec<(usize, String)> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| !crate::config::ASSET_COLUMNS.contains(&c.as_str()))
        .map(|(i, c)| (i, c.clone()))
        .collect();
    let mut numeric = vec![true; extra.len()];
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        for (k, (i, _)) in extra.iter().enumerate() {
            if rec.get(*i).unwrap_or("").parse::<f64>().is_err() {
                numeric[k] = false;
            }
        }
    }
    Ok(extra
        .into_iter()
        .zip(numeric)
        .map(|((_, c), n)| (c, if n { ColType::Num } else { ColType::Str }))
        .collect())
}

/// Loads `assets.csv`; `extra` gives the extra columns' names and types.
pub fn load_assets(path: &Path, extra: &[(String, ColType)]) -> Result<Vec<AssetRow>, String> {
    let mut r = reader(path)?;
    let cols = headers(&mut r, path)?;
    let idx = require(&cols, crate::config::ASSET_COLUMNS, path)?;
    let extra_idx: Vec<usize> = extra
        .iter()
        .map(|(n, _)| {
            cols.iter()
                .position(|c| c == n)
                .ok_or_else(|| format!("`{}` lost its `{n}` column", path.display()))
        })
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let get = |i: usize| rec.get(idx[i]).unwrap_or("").to_string();
        let standby: f64 = get(5).parse().map_err(|_| {
            format!(
                "`{}` line {}: standby_kw `{}` is not a number",
                path.display(),
                line + 2,
                get(5)
            )
        })?;
        let tag = get(0);
        if seen.insert(tag.clone(), line).is_some() {
            return Err(format!(
                "`{}` line {}: tag `{tag}` is listed twice",
                path.display(),
                line + 2
            ));
        }
        let extra = extra
            .iter()
            .zip(&extra_idx)
            .map(|((_, t), i)| {
                let s = rec.get(*i).unwrap_or("");
                match t {
                    ColType::Num => Scalar::Num(F64(s.parse().unwrap_or(f64::NAN))),
                    ColType::Bool => Scalar::Bool(s == "true"),
                    ColType::Str => Scalar::Str(s.to_string()),
                }
            })
            .collect();
        out.push(AssetRow {
            tag,
            asset: get(1),
            site: get(2),
            line: get(3),
            kind: get(4),
            standby_kw: F64(standby),
            extra,
        });
    }
    Ok(out)
}

/// Loads intervals keyed by `key_col` (`line` for production, `asset` for maintenance).
pub fn load_intervals(path: &Path, key_col: &str) -> Result<Vec<Interval>, String> {
    let mut r = reader(path)?;
    let cols = headers(&mut r, path)?;
    let idx = require(&cols, &[key_col, "start_ms", "end_ms"], path)?;
    let units_col = cols.iter().position(|c| c == "units");
    let mut out = Vec::new();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("`{}`: {e}", path.display()))?;
        let line = line + 2;
        let int = |i: usize| -> Result<i64, String> {
            let s = rec.get(idx[i]).unwrap_or("");
            s.parse::<i64>().map_err(|_| {
                format!(
                    "`{}` line {line}: `{s}` is not epoch milliseconds",
                    path.display()
                )
            })
        };
        let (start_ms, end_ms) = (int(1)?, int(2)?);
        if end_ms < start_ms {
            return Err(format!(
                "`{}` line {line}: end_ms is before start_ms",
                path.display()
            ));
        }
        let units = match units_col.map(|i| rec.get(i).unwrap_or("").trim()) {
            None | Some("") => None,
            Some(s) => Some(F64(s
                .parse::<f64>()
                .ok()
                .filter(|u| u.is_finite())
                .ok_or_else(|| {
                    format!(
                        "`{}` line {line}: units `{s}` is not a number",
                        path.display()
                    )
                })?)),
        };
        out.push(Interval {
            key: rec.get(idx[0]).unwrap_or("").to_string(),
            start_ms,
            end_ms,
            units,
        });
    }
    Ok(out)
}
