//! Backfill, the decoder's half: what each item had before a gap, the
//! times a running backfill has fed (from history or the live stream, so
//! neither counts a value twice), and gap rows waiting for their history.

use std::collections::HashSet;

use super::decode::Decoder;
use super::history::{Done, Request};
use super::*;

/// One item's running backfill.
struct Fill {
    id: u64,
    /// The item's last event time before the gap: history up to it is had.
    after: i64,
    /// The gap's end: live values after it are new.
    until: i64,
    /// Times fed within `(after, until]`.
    seen: HashSet<i64>,
    /// A live value after `until` has arrived.
    live_past: bool,
    /// The history read has ended.
    done: bool,
}

/// A gap row waiting for its history read.
struct Pending {
    id: u64,
    gap: Gap,
    handles: Vec<u32>,
    /// History values that were new (not delivered live too).
    fed: u64,
}

pub(super) struct Fills {
    budget: Option<u64>,
    next: u64,
    items: Vec<Option<Fill>>,
    pending: Vec<Pending>,
    /// While the connection is lost (until it is back, or its gap is
    /// marked): each item's last time before the loss, and the times fed
    /// since (a reactivated session may deliver some before a gap is known).
    loss: Option<Loss>,
}

/// Per item: the last event time before the loss, and the times fed since.
type Loss = (Vec<Option<i64>>, Vec<HashSet<i64>>);

impl Fills {
    pub(super) fn new(budget: Option<u64>) -> Fills {
        Fills {
            budget,
            next: 1,
            items: Vec::new(),
            pending: Vec::new(),
            loss: None,
        }
    }

    /// The connection was lost; `last` is each item's last event time.
    pub(super) fn loss_began(&mut self, last: impl Iterator<Item = Option<i64>>) {
        if self.budget.is_some() {
            let before: Vec<Option<i64>> = last.collect();
            let since = before.iter().map(|_| HashSet::new()).collect();
            self.loss = Some((before, since));
        }
    }

    /// The connection is back with nothing lost, or its gap is marked.
    pub(super) fn loss_ended(&mut self) {
        self.loss = None;
    }

    pub(super) fn items(&mut self, n: usize) {
        self.items = (0..n).map(|_| None).collect();
    }

    /// Item `i` is in a gap ending `until`; it had values up to `after`
    /// (or up to its last before the connection was lost).
    pub(super) fn begin(&mut self, i: usize, after: i64, until: i64) {
        if self.budget.is_some() {
            let (after, seen) = match &mut self.loss {
                Some((before, since)) => {
                    (before[i].unwrap_or(after), std::mem::take(&mut since[i]))
                }
                None => (after, HashSet::new()),
            };
            self.items[i] = Some(Fill {
                id: self.next,
                after,
                until,
                seen,
                live_past: false,
                done: false,
            });
        }
    }

    /// Asks for the gap's history; gives the row back if there is no
    /// backfill to wait for.
    pub(super) fn request(
        &mut self,
        mut gap: Gap,
        handles: &[u32],
        ctl: &tokio::sync::mpsc::UnboundedSender<Ctl>,
    ) -> Option<Gap> {
        let Some(budget) = self.budget.filter(|_| !handles.is_empty()) else {
            if gap.recovery.is_empty() {
                gap.recovery = "none: the server's history is not read (backfill = false)".into();
            }
            return Some(gap);
        };
        let id = self.next;
        self.next += 1;
        let req = Request {
            id,
            handles: handles.to_vec(),
            start: gap.start,
            end: gap.end,
            budget,
        };
        if ctl.send(Ctl::History(req)).is_err() {
            return Some(gap);
        }
        self.pending.push(Pending {
            id,
            gap,
            handles: handles.to_vec(),
            fed: 0,
        });
        None
    }

    /// Whether a history value of item `i` at `ts` is new (counted in
    /// `counts`: new, already had).
    pub(super) fn history_new(&mut self, i: usize, ts: i64, counts: &mut (u64, u64)) -> bool {
        let (new, id) = match &mut self.items[i] {
            Some(f) => (ts > f.after && ts <= f.until && f.seen.insert(ts), f.id),
            None => (false, 0),
        };
        if new {
            if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
                p.fed += 1;
            }
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        new
    }

    /// Whether a live value of item `i` at `ts` is new.
    pub(super) fn live_new(&mut self, i: usize, ts: i64) -> bool {
        if let Some((_, since)) = &mut self.loss {
            since[i].insert(ts);
        }
        let Some(f) = self.items.get_mut(i).and_then(Option::as_mut) else {
            return true;
        };
        if ts > f.until {
            f.live_past = true;
            if f.done {
                self.items[i] = None;
            }
            return true;
        }
        ts <= f.after || f.seen.insert(ts)
    }

    /// A history read ended: its gap row, with what it found.
    fn done(&mut self, d: &Done) -> Option<Gap> {
        let k = self.pending.iter().position(|p| p.id == d.id)?;
        let Pending {
            mut gap,
            handles,
            fed,
            ..
        } = self.pending.remove(k);
        for h in &handles {
            let slot = &mut self.items[*h as usize - 1];
            if let Some(f) = slot.as_mut().filter(|f| f.id == d.id) {
                f.done = true;
                if f.live_past {
                    *slot = None;
                }
            }
        }
        let found = recovery(d, fed, handles.len(), self.budget.unwrap_or(0));
        gap.recovery = if gap.recovery.is_empty() {
            found
        } else {
            format!("{}; {found}", gap.recovery)
        };
        Some(gap)
    }
}

/// What a backfill found, for the gap row.
fn recovery(d: &Done, fed: u64, nodes: usize, budget: u64) -> String {
    if let Some(e) = &d.error {
        return format!("none: HistoryRead failed ({e})");
    }
    let first = d
        .refused
        .first()
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    if d.refused.len() == nodes {
        return format!("none: the server keeps no history of these nodes ({first})");
    }
    if d.values == 0 && !d.truncated {
        return "none: the server's history has no values in the gap (it may not historize these nodes)"
            .into();
    }
    let mut s = format!("backfilled {fed} values from the server's history");
    if d.values > fed {
        s += &format!(" (of {} read; the rest had arrived live)", d.values);
    }
    if !d.refused.is_empty() {
        s += &format!("; {} of {nodes} nodes have none ({first})", d.refused.len());
    }
    if d.truncated {
        s += &format!(
            "; stopped at backfill_max_values ({budget}): the rest of the gap is not filled"
        );
    }
    s
}

impl Decoder {
    pub(super) fn history(&mut self, id: u64, values: Vec<(u32, DataValue)>, now: i64) {
        tracing::debug!(source = %self.n.ctx().id, id, n = values.len(), "history values");
        self.values(values, now, true);
        let (new, had) = std::mem::take(&mut self.history_counts);
        let stats = &self.n.ctx().stats;
        for (what, n) in [
            ("opcua: values backfilled from history", new),
            ("opcua: history values already had", had),
        ] {
            if n > 0 {
                stats.event(what, n);
            }
        }
    }

    pub(super) fn history_done(&mut self, d: Done) {
        if let Some(gap) = self.fill.done(&d) {
            tracing::info!(source = %gap.source, "gap from {} to {}: {}", gap.start, gap.end, gap.recovery);
            let _ = self
                .n
                .ctx()
                .sink
                .send(Stamped::now(SinkBatch::Gaps(vec![gap])));
        }
    }

    /// The source stops: gaps still waiting for history are written as
    /// they are.
    pub(super) fn finish(mut self) {
        for p in std::mem::take(&mut self.fill.pending) {
            let mut gap = p.gap;
            let not = "backfill not finished when the source stopped";
            gap.recovery = if gap.recovery.is_empty() {
                format!("none: {not}")
            } else {
                format!("{}; {not}", gap.recovery)
            };
            let _ = self
                .n
                .ctx()
                .sink
                .send(Stamped::now(SinkBatch::Gaps(vec![gap])));
        }
        self.n.end();
    }
}
