//! Edits to the context tables, as a message source decodes them and the
//! context store applies them.

/// An open run or maintenance window counts for at most this long after its start.
pub const OPEN_HORIZON_MS: i64 = 24 * 3_600_000;

/// Which table a route edits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Assets,
    Tariff,
    Production,
    Maintenance,
}

impl Table {
    pub fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "assets" => Table::Assets,
            "tariff" => Table::Tariff,
            "production" => Table::Production,
            "maintenance" => Table::Maintenance,
            _ => return None,
        })
    }

    /// The key column of interval tables.
    pub fn key(self) -> &'static str {
        match self {
            Table::Maintenance => "asset",
            _ => "line",
        }
    }
}

/// One edit to a context table.
#[derive(Clone, Debug, PartialEq)]
pub enum Edit {
    /// Asset row fields by column name (strings; numbers as text).
    UpsertAsset(Vec<(String, String)>),
    DeleteAsset(String),
    Interval {
        table: Table,
        key: String,
        start: i64,
        end: i64,
        units: Option<f64>,
    },
    Start {
        table: Table,
        key: String,
        ts: i64,
    },
    Stop {
        table: Table,
        key: String,
        ts: i64,
        units: Option<f64>,
    },
    DeleteInterval {
        table: Table,
        key: String,
        start: i64,
    },
    /// The whole tariff as CSV text (header + rows), checked like the file.
    Tariff(String),
}
