//! A worker's ends: the initial context it feeds, and the sink operators
//! its outputs leave by.

use std::sync::{Arc, Mutex};

use timely::dataflow::Stream;

use super::{checkpoint, output, value, Inputs, Names, Outlet};
use super::{progress_marker, send_aggregates, send_value_out};
use crate::ingest::{Geometry, InitialContext, TagRegistry};
use crate::model::Enriched;
use crate::value::layer::{ValueIn, ValueLayer};

/// The initial context: every worker feeds its own copy (no process-local
/// id crosses workers); it is dropped once all have.
pub(super) struct Initial {
    context: Mutex<Option<InitialContext>>,
    fed: std::sync::atomic::AtomicUsize,
    workers: usize,
}

impl Initial {
    pub(super) fn new(context: InitialContext, workers: usize) -> Initial {
        Initial {
            context: Mutex::new(Some(context)),
            fed: Default::default(),
            workers,
        }
    }

    pub(super) fn feed(
        &self,
        inputs: &mut Inputs,
        at: Option<u64>,
        interners: (&TagRegistry, &Names),
    ) {
        let init = self.context.lock().ok().and_then(|i| i.clone());
        inputs.start(at, &init.unwrap_or_default(), interners);
        let fed = self.fed.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        if fed == self.workers {
            self.context.lock().ok().and_then(|mut i| i.take());
        }
    }
}

/// The value layer's input, the layer, and its ledger's plan.
type ValueSide<'s> = (
    Stream<'s, u64, Vec<(ValueIn, u64, isize)>>,
    ValueLayer,
    Option<value::LedgerPlan>,
);

/// Where a worker's outputs go: the writer's channel, and the counters.
pub(super) struct Outlets {
    pub(super) agg: Option<Outlet>,
    pub(super) val: Option<Outlet>,
    pub(super) queued: Arc<crate::stats::Stats>,
    pub(super) stats: Arc<crate::stats::Stats>,
}

/// How many progress markers the writer hears from: each worker's two sink
/// operators, and in a cluster worker 0's side rows (see
/// `cluster::side_to_writer`).
pub(super) fn progress_sources(workers: usize, in_cluster: bool) -> usize {
    2 * workers + usize::from(in_cluster)
}

/// The sink operators: the aggregates' revisions and the value layer, each
/// with progress markers for the writer, which hears from its own
/// process's workers (`local` of `workers`; in a cluster every row goes to
/// worker 0, the lake's one writer).
pub(super) fn to_sinks<'s>(
    enriched: Stream<'s, u64, Vec<(Enriched, u64, isize)>>,
    (value_in, layer, ledger): ValueSide<'s>,
    o: Outlets,
    (local, workers, in_cluster): (usize, usize, bool),
    geo: Geometry,
    ck: &checkpoint::Checkpoints,
) {
    let of = progress_sources(workers, in_cluster);
    let agg_progress = progress_marker(o.agg.clone(), local, of);
    let val_progress = progress_marker(o.val.clone(), workers + local, of);
    let to_sink = send_aggregates(o.agg, o.queued);
    let out = (geo, in_cluster);
    output::revisions(enriched, "sink:aggregates", out, to_sink, agg_progress, ck);
    let (tx_val, stats) = (o.val, o.stats);
    value::value_op(
        value_in,
        layer,
        ledger,
        move |t, out, c| send_value_out(tx_val.as_ref(), &stats, t, out, c),
        val_progress,
        ck,
    );
}
