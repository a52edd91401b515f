//! One row version as a JSON document: the row's own fields and `table`,
//! `dataflow`, `revision` (and, for actions, RFC 3339 copies of the period
//! start and status time), serialised straight from the row. The
//! `mqtt_publish`, `jsonl` and `webhook` sinks write the same documents, so
//! a consumer keeps the highest `revision` per key whichever way they came.

use super::{rfc3339_ms, ActionRow, SinkBatch};

#[derive(serde::Serialize)]
struct RowMessage<'a, R: serde::Serialize> {
    #[serde(flatten)]
    row: &'a R,
    table: &'static str,
    dataflow: &'a str,
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_start_time: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_time: Option<Option<String>>,
}

/// The document of one version of an `outcomes` or `billing` row (any row
/// with its own fields).
pub fn row_json<R: serde::Serialize>(
    table: &'static str,
    dataflow: &str,
    revision: i64,
    row: &R,
) -> Vec<u8> {
    let m = RowMessage {
        row,
        table,
        dataflow,
        revision,
        period_start_time: None,
        status_time: None,
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// The document of one version of an action.
pub fn action_json(dataflow: &str, revision: i64, a: &ActionRow) -> Vec<u8> {
    let m = RowMessage {
        row: a,
        table: "actions",
        dataflow,
        revision,
        period_start_time: Some(rfc3339_ms(a.period_start)),
        status_time: Some(rfc3339_ms(a.status_at)),
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// One version of a value table's row as its document, and the key naming
/// that version: `<action_id>-<revision>` (an action), `<action_id>-outcome-
/// <revision>` (an outcome), `<site>-<period_start>-bill-<revision>` (a bill).
pub struct Version {
    pub key: String,
    pub doc: Vec<u8>,
}

/// The row versions of a batch of the value tables `want` names (none for
/// the other tables).
pub fn versions(dataflow: &str, batch: &SinkBatch, want: impl Fn(&str) -> bool) -> Vec<Version> {
    match batch {
        SinkBatch::Actions(rows) if want("actions") => rows
            .iter()
            .map(|(a, rev)| Version {
                key: format!("{}-{rev}", a.action_id),
                doc: action_json(dataflow, *rev, a),
            })
            .collect(),
        SinkBatch::Outcomes(rows) if want("outcomes") => rows
            .iter()
            .map(|(o, rev)| Version {
                key: format!("{}-outcome-{rev}", o.action_id),
                doc: row_json("outcomes", dataflow, *rev, o),
            })
            .collect(),
        SinkBatch::Billing(rows) if want("billing") => rows
            .iter()
            .map(|(b, rev)| Version {
                key: format!("{}-{}-bill-{rev}", b.site, b.period_start),
                doc: row_json("billing", dataflow, *rev, b),
            })
            .collect(),
        _ => Vec::new(),
    }
}
