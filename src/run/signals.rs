//! Stopping a run: SIGINT and SIGTERM. The first stops the sources (a clean
//! shutdown: what is final is committed, see `docs/durability.md`); the
//! second exits at once. In a cluster, a signal to any process stops every
//! process (`docs/cluster.md`).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use super::cluster;
use super::supervise::Supervisor;
use super::RunOptions;
use crate::engine;
use crate::ingest::Ingest;

/// This process's place, for what a signal stops.
pub(super) enum Role<'a> {
    /// No cluster.
    Alone,
    /// Process 0 of a cluster: it stops every process.
    Zero(&'a Arc<Ingest>),
    /// Another process of a cluster: it asks process 0 to stop them all.
    Peer(&'a Arc<Ingest>),
}

impl Role<'_> {
    /// The role of the process that writes the lake.
    pub(super) fn of<'a>(opts: &RunOptions, ingest: &'a Arc<Ingest>) -> Role<'a> {
        match opts.cluster {
            Some(_) => Role::Zero(ingest),
            None => Role::Alone,
        }
    }
}

/// Signals: the first stops sources (a clean shutdown), the second exits at once.
pub(super) fn on_signals(
    rt: &tokio::runtime::Runtime,
    (stop, sup): (&Arc<AtomicBool>, &Arc<Supervisor>),
    drain: bool,
    role: Role,
) {
    let zero = match role {
        Role::Alone => None,
        Role::Zero(ingest) => {
            cluster::stop_with_cluster(sup, stop, (ingest, true), drain);
            Some(ingest.clone())
        }
        Role::Peer(ingest) => {
            cluster::stop_with_cluster(sup, stop, (ingest, false), drain);
            None
        }
    };
    let stop = stop.clone();
    let sup = sup.clone();
    rt.spawn(async move {
        let mut signals = 0;
        loop {
            #[cfg(unix)]
            {
                let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => return,
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
            }
            signals += 1;
            if signals == 1 {
                // In a cluster, process 0 stops every process (keeping only
                // what is final first); another asks it to, and stops when
                // process 0 says so.
                if let Some(zero) = &zero {
                    cluster::keep_what_is_final(zero, drain);
                }
                let told = engine::cluster::tell_stop();
                if told == engine::cluster::Told::Zero {
                    eprintln!("plantflow: asking process 0 to stop the cluster (signal again to abort)");
                    cluster::stop_alone_after(&sup, &stop, cluster::ASKED_STOP_WAIT);
                    continue;
                }
                if told == engine::cluster::Told::Peers {
                    eprintln!("plantflow: stopping the cluster's other processes too");
                }
                if drain {
                    eprintln!("plantflow: stopping (draining: closing every window and committing files; signal again to abort)");
                } else {
                    eprintln!("plantflow: stopping (committing what is final; open windows go on at the next start; signal again to abort)");
                }
                sup.stopping();
                stop.store(true, Relaxed);
            } else {
                eprintln!("plantflow: aborted");
                std::process::exit(super::supervise::EXIT_ABORTED as i32);
            }
        }
    });
}
