//! The lake's tables, each described once: its columns' names, types and
//! nullability, in file order. The Parquet writer builds its schemas from
//! these, the report reads by them, and a test holds `schemas/*.md` to them.

/// A column's type in the lake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColKind {
    /// UTF-8 string.
    Str,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer.
    I64,
    Bool,
    /// Milliseconds since the epoch, UTC.
    Ts,
}

/// One column of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColKind,
    pub nullable: bool,
}

/// One table of the lake.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The fixed columns, in file order.
    pub columns: &'static [Column],
    /// Where the dataflow's metric columns go (before this fixed column), for
    /// the one table that has them (`aggregates`).
    pub metrics_at: Option<usize>,
}

impl Table {
    /// The fixed column `name`, if the table has one.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

use ColKind::*;

const fn col(name: &'static str, kind: ColKind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

const fn null(name: &'static str, kind: ColKind) -> Column {
    Column {
        name,
        kind,
        nullable: true,
    }
}

/// One row per tag and window, and revision.
pub const AGGREGATES: Table = Table {
    name: "aggregates",
    columns: &[
        col("site", Str),
        col("line", Str),
        col("asset", Str),
        col("tag", Str),
        col("kind", Str),
        col("window_start", Ts),
        col("window_end", Ts),
        col("count", I64),
        col("mean", F64),
        col("min", F64),
        col("max", F64),
        col("first", F64),
        col("last", F64),
        col("price_per_kwh", F64),
        col("producing", Bool),
        col("in_maintenance", Bool),
        col("revision", I64),
    ],
    metrics_at: Some(16),
};

/// One row per action and revision.
pub const ACTIONS: Table = Table {
    name: "actions",
    columns: &[
        col("action_id", Str),
        col("dataflow", Str),
        col("rule", Str),
        col("site", Str),
        col("line", Str),
        col("asset", Str),
        col("owner", Str),
        col("action_type", Str),
        col("value_category", Str),
        col("value", F64),
        col("currency", Str),
        col("severity", Str),
        col("period_start", Ts),
        col("period_end", Ts),
        col("status", Str),
        col("evidence", Str),
        col("revision", I64),
        col("category", Str),
        col("findings", I64),
        col("status_at", Ts),
        col("status_by", Str),
        col("status_note", Str),
    ],
    metrics_at: None,
};

/// One row per verification of an action, and revision.
pub const OUTCOMES: Table = Table {
    name: "outcomes",
    columns: &[
        col("action_id", Str),
        col("dataflow", Str),
        col("rule", Str),
        col("site", Str),
        col("asset", Str),
        col("baseline_start", Ts),
        col("baseline_end", Ts),
        col("reporting_start", Ts),
        col("reporting_end", Ts),
        col("model", Str),
        col("n_baseline", I64),
        col("n_reporting", I64),
        null("r2", F64),
        null("cv_rmse", F64),
        null("nmbe", F64),
        null("baseline_kwh", F64),
        col("actual_kwh", F64),
        null("avoided_kwh", F64),
        null("avoided_cost", F64),
        col("currency", Str),
        null("fractional_savings", F64),
        null("fsu_68", F64),
        null("fsu_90", F64),
        col("verdict", Str),
        col("reason", Str),
        col("final", Bool),
        col("computed_at", Ts),
        col("revision", I64),
    ],
    metrics_at: None,
};

/// The series behind each final outcome: one row per bucket.
pub const OUTCOME_BUCKETS: Table = Table {
    name: "outcome_buckets",
    columns: &[
        col("action_id", Str),
        col("dataflow", Str),
        col("rule", Str),
        col("site", Str),
        col("asset", Str),
        col("bucket_start", Ts),
        col("bucket_end", Ts),
        col("period", Str),
        col("units", F64),
        col("measured_kwh", F64),
        col("predicted_kwh", F64),
        col("cost", F64),
        col("revision", I64),
    ],
    metrics_at: None,
};

/// One row per site and billing period, and revision.
pub const BILLING: Table = Table {
    name: "billing",
    columns: &[
        col("site", Str),
        col("period_start", Ts),
        col("period_end", Ts),
        col("energy_kwh", F64),
        col("energy_cost", F64),
        col("peak_kw", F64),
        col("peak_interval_start", Ts),
        col("demand_cost", F64),
        col("total_cost", F64),
        col("peak_shave_kw", F64),
        col("peak_shave_value", F64),
        col("currency", Str),
        col("intervals", I64),
        col("energy_by_price", Str),
        col("final", Bool),
        col("revision", I64),
    ],
    metrics_at: None,
};

/// One row per rejected record.
pub const DEAD_LETTER: Table = Table {
    name: "dead_letter",
    columns: &[
        col("source", Str),
        col("received_at", Ts),
        col("reason", Str),
        col("raw", Str),
        null("topic", Str),
        col("raw_encoding", Str),
        col("raw_bytes", I64),
        col("raw_hash", Str),
    ],
    metrics_at: None,
};

/// One row per outage of a source.
pub const GAPS: Table = Table {
    name: "gaps",
    columns: &[
        col("source", Str),
        col("gap_start", Ts),
        col("gap_end", Ts),
        col("tags", I64),
        col("reason", Str),
        col("recovery", Str),
    ],
    metrics_at: None,
};

/// One row per tag and snapshot: its data quality (see `[tag_quality]`).
pub const TAG_QUALITY: Table = Table {
    name: "tag_quality",
    columns: &[
        col("snapshot_at", Ts),
        col("tag", Str),
        col("site", Str),
        col("line", Str),
        col("asset", Str),
        col("kind", Str),
        col("unit", Str),
        col("status", Str),
        col("detail", Str),
        col("samples", I64),
        null("first_ts", Ts),
        null("last_ts", Ts),
        null("last_value", F64),
        null("min", F64),
        null("max", F64),
        null("interval_ms", I64),
        null("unchanged_since", Ts),
    ],
    metrics_at: None,
};

/// Every table, in the order `tables = [...]` lists them by default.
pub const ALL: &[&Table] = &[
    &AGGREGATES,
    &ACTIONS,
    &OUTCOMES,
    &BILLING,
    &DEAD_LETTER,
    &GAPS,
    &OUTCOME_BUCKETS,
    &TAG_QUALITY,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_unique() {
        for t in ALL {
            let mut seen = std::collections::HashSet::new();
            for c in t.columns {
                assert!(seen.insert(c.name), "{}.{} twice", t.name, c.name);
            }
        }
        assert_eq!(AGGREGATES.columns[16].name, "revision");
    }

    /// Splits a type cell at commas outside parentheses: `double, timestamp(ms, UTC)`.
    fn type_list(cell: &str) -> Vec<String> {
        let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
        for ch in cell.chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(std::mem::take(&mut cur).trim().to_string());
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        out.push(cur.trim().to_string());
        // "string, nullable" says one thing about one column.
        out.retain(|s| s != "nullable");
        out
    }

    fn kind_of(ty: &str) -> Option<ColKind> {
        let ty = ty.trim_start_matches('*');
        [
            ("string", Str),
            ("double", F64),
            ("int64", I64),
            ("bool", Bool),
            ("timestamp", Ts),
        ]
        .into_iter()
        .find(|(w, _)| ty.starts_with(w))
        .map(|(_, k)| k)
    }

    /// `schemas/<table>.md` lists every column of the table, in file order,
    /// with its type: a column added without its line (or a line left after
    /// a column went) fails here.
    #[test]
    fn schemas_docs_match_tables() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for t in ALL {
            let path = root.join("schemas").join(format!("{}.md", t.name));
            let text = std::fs::read_to_string(&path).expect("schema doc");
            let mut documented: Vec<(String, ColKind)> = Vec::new();
            for line in text.lines().filter(|l| l.starts_with("| `")) {
                let cells: Vec<&str> = line.split(" | ").collect();
                let names: Vec<String> = cells[0]
                    .trim_start_matches("| ")
                    .split(", ")
                    .map(|n| n.trim_matches('`').to_string())
                    .collect();
                let types = type_list(cells[1]);
                assert!(
                    types.len() == 1 || types.len() == names.len(),
                    "{}: `{}` gives {} types for {} columns",
                    path.display(),
                    cells[1],
                    types.len(),
                    names.len()
                );
                for (i, n) in names.into_iter().enumerate() {
                    let ty = &types[if types.len() == 1 { 0 } else { i }];
                    let kind = kind_of(ty)
                        .unwrap_or_else(|| panic!("{}: unknown type `{ty}`", path.display()));
                    documented.push((n, kind));
                }
            }
            let described: Vec<(String, ColKind)> = t
                .columns
                .iter()
                .map(|c| (c.name.to_string(), c.kind))
                .collect();
            assert_eq!(
                documented,
                described,
                "{} against model::tables",
                path.display()
            );
        }
    }
}
