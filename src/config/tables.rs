//! Context CSV files: opening them, reading their header, and the extra
//! columns of the assets file (their types enter the expressions' scope).

use std::path::Path;

use crate::expr::ColType;

pub fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>, String> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

pub fn headers(r: &mut csv::Reader<std::fs::File>, path: &Path) -> Result<Vec<String>, String> {
    Ok(r.headers()
        .map_err(|e| format!("cannot read the header of `{}`: {e}", path.display()))?
        .iter()
        .map(|s| s.to_string())
        .collect())
}

pub fn require(cols: &[String], need: &[&str], path: &Path) -> Result<Vec<usize>, String> {
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
    require(&cols, super::ASSET_COLUMNS, path)?;
    let extra: Vec<(usize, String)> = cols
        .iter()
        .enumerate()
        .filter(|(_, c)| !super::ASSET_COLUMNS.contains(&c.as_str()))
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
