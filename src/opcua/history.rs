//! Backfill, the session's half: HistoryRead (ReadRawModifiedDetails) of
//! the items of a gap over its interval, following continuation points
//! within a budget of values, handed to the decoder as they come.

use opcua::client::{HistoryReadAction, Session};
use opcua::types::{
    ByteString, DateTime, HistoryData, HistoryReadValueId, ReadRawModifiedDetails, StatusCode,
    TimestampsToReturn,
};

use super::{send, Ev, SyncSender};
use crate::opcua::nodes::Item;

/// Nodes per HistoryRead call, and values per node per call.
const NODES_PER_CALL: usize = 100;
const VALUES_PER_CALL: u32 = 10_000;

/// What a backfill asks the session for.
#[derive(Clone, Debug)]
pub(super) struct Request {
    pub id: u64,
    pub handles: Vec<u32>,
    pub start: i64,
    pub end: i64,
    pub budget: u64,
}

/// How a backfill's reads ended.
#[derive(Debug, Default)]
pub(super) struct Done {
    pub id: u64,
    pub values: u64,
    /// Nodes whose history could not be read, with the status.
    pub refused: Vec<(u32, StatusCode)>,
    /// The budget ran out with values left.
    pub truncated: bool,
    pub error: Option<String>,
}

fn time(ms: i64) -> DateTime {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(DateTime::from)
        .unwrap_or_else(DateTime::null)
}

/// Reads the history of `req.handles` over `[start, end]`, sending values
/// as `Ev::History` chunks; returns how it went.
pub(super) async fn read(
    session: &Session,
    items: &[Item],
    req: &Request,
    tx: &SyncSender<Ev>,
) -> Done {
    let mut done = Done {
        id: req.id,
        ..Default::default()
    };
    let details = ReadRawModifiedDetails {
        is_read_modified: false,
        start_time: time(req.start),
        end_time: time(req.end),
        num_values_per_node: VALUES_PER_CALL.min(req.budget.max(1) as u32),
        return_bounds: false,
    };
    let mut pending: Vec<(u32, ByteString)> = req
        .handles
        .iter()
        .map(|h| (*h, ByteString::null()))
        .collect();
    let mut left: Vec<(u32, ByteString)> = Vec::new();
    while !pending.is_empty() {
        let mut next = Vec::new();
        for chunk in pending.chunks(NODES_PER_CALL) {
            let ids = value_ids(items, chunk);
            let action = HistoryReadAction::ReadRawModifiedDetails(details.clone());
            let results = match session
                .history_read(action, TimestampsToReturn::Both, false, &ids)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    done.error = Some(e.to_string());
                    return done;
                }
            };
            for (&(h, _), r) in chunk.iter().zip(results) {
                if r.status_code.is_bad() {
                    done.refused.push((h, r.status_code));
                    continue;
                }
                let values = r
                    .history_data
                    .into_inner_as::<HistoryData>()
                    .and_then(|d| d.data_values)
                    .unwrap_or_default();
                done.values += values.len() as u64;
                if !values.is_empty() {
                    let values = values.into_iter().map(|dv| (h, dv)).collect();
                    send(tx, Ev::History { id: req.id, values });
                }
                if !r.continuation_point.is_null_or_empty() {
                    if done.values >= req.budget {
                        done.truncated = true;
                        left.push((h, r.continuation_point));
                    } else {
                        next.push((h, r.continuation_point));
                    }
                }
            }
        }
        pending = next;
    }
    release(session, items, &details, &left).await;
    done
}

/// What to read of each (client handle, continuation point).
fn value_ids(items: &[Item], chunk: &[(u32, ByteString)]) -> Vec<HistoryReadValueId> {
    chunk
        .iter()
        .map(|(h, cp)| HistoryReadValueId {
            node_id: items[*h as usize - 1].node.clone(),
            continuation_point: cp.clone(),
            ..Default::default()
        })
        .collect()
}

/// Lets the server free the continuation points of reads not finished.
async fn release(
    session: &Session,
    items: &[Item],
    details: &ReadRawModifiedDetails,
    left: &[(u32, ByteString)],
) {
    for chunk in left.chunks(NODES_PER_CALL) {
        let ids = value_ids(items, chunk);
        let action = HistoryReadAction::ReadRawModifiedDetails(details.clone());
        let _ = session
            .history_read(action, TimestampsToReturn::Neither, true, &ids)
            .await;
    }
}
