//! The session task: opens the session (security, limits), browses and
//! subscribes, drives async-opcua's event loop through reconnects, and
//! answers the decoder's republish and read requests.

use super::*;

/// The subscription callback: forwards whole notification messages.
pub(super) struct Notify {
    tx: SyncSender<Ev>,
    sub: usize,
}

impl OnSubscriptionNotificationCore for Notify {
    fn on_subscription_notification(
        &mut self,
        msg: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let seq = msg.sequence_number;
        let data = msg.notification_data.unwrap_or_default();
        if data.is_empty() {
            send(&self.tx, Ev::KeepAlive { sub: self.sub, seq });
            return;
        }
        let (values, status) = split(data);
        if !values.is_empty() || status.is_none() {
            send(
                &self.tx,
                Ev::Data {
                    sub: self.sub,
                    seq,
                    values,
                    republished: false,
                },
            );
        }
        if let Some(status) = status {
            send(
                &self.tx,
                Ev::Status {
                    sub: self.sub,
                    status,
                },
            );
        }
    }
}

/// Data changes and the subscription status change of a message.
pub(super) fn split(data: Vec<ExtensionObject>) -> (Vec<(u32, DataValue)>, Option<StatusCode>) {
    let mut values = Vec::new();
    let mut status = None;
    for obj in data {
        if let Some(dc) = obj.inner_as::<DataChangeNotification>() {
            for n in dc.monitored_items.iter().flatten() {
                values.push((n.client_handle, n.value.clone()));
            }
        } else if let Some(sc) = obj.inner_as::<StatusChangeNotification>() {
            status = Some(sc.status);
        }
    }
    (values, status)
}

/// Operation limits the server announces (0: none announced).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    browse: usize,
    monitored: usize,
    read: usize,
}

pub(super) async fn limits(session: &Session) -> Limits {
    let ids = [
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
        VariableId::Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ];
    let reads: Vec<ReadValueId> = ids
        .iter()
        .map(|v| ReadValueId {
            node_id: (*v).into(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        })
        .collect();
    let vals = session
        .read(&reads, TimestampsToReturn::Neither, 0.0)
        .await
        .unwrap_or_default();
    let get = |i: usize, default: usize| {
        vals.get(i)
            .and_then(|dv| dv.value.as_ref())
            .and_then(|v| value::number(v).ok())
            .filter(|n| *n >= 1.0)
            .map(|n| n as usize)
            .unwrap_or(default)
    };
    Limits {
        browse: get(0, 500).min(5000),
        monitored: get(1, 1000).min(5000),
        read: get(2, 1000).min(5000),
    }
}

/// Connects (retrying while the server is unreachable), waits for the
/// session, and returns it with its event stream. `first` makes
/// configuration-class failures (no such endpoint, untrusted certificate,
/// refused user) fatal instead of retried.
pub(super) async fn open(
    client: &mut opcua::client::Client,
    plan: &OpcUaSourcePlan,
    stop: &AtomicBool,
    first: bool,
) -> Result<
    Option<(
        Arc<Session>,
        tokio::sync::mpsc::UnboundedReceiver<Result<SessionPollResult, StatusCode>>,
        tokio::task::JoinHandle<()>,
    )>,
    String,
> {
    let mut failures = 0u32;
    loop {
        if stop.load(Relaxed) {
            return Ok(None);
        }
        let attempt = async {
            let (session, ev_loop) = conn::connect(client, &plan.conn).await?;
            let (etx, mut erx) = tokio::sync::mpsc::unbounded_channel();
            let poller = tokio::spawn(async move {
                let s = ev_loop.enter();
                futures::pin_mut!(s);
                while let Some(r) = s.next().await {
                    if etx.send(r).is_err() {
                        break;
                    }
                }
            });
            // Wait for the first activation; a refused certificate or user
            // shows up as failed reconnects, never as a connection.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let r = tokio::time::timeout_at(deadline, erx.recv()).await;
                match r {
                    Ok(Some(Ok(SessionPollResult::Reconnected(_)))) => break,
                    Ok(Some(Ok(SessionPollResult::ReconnectFailed(s)))) | Ok(Some(Err(s))) => {
                        poller.abort();
                        return Err((s, conn::explain(&plan.conn, s, "session activation failed")));
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(None) => {
                        return Err((
                            StatusCode::BadConnectionClosed,
                            "the session event loop ended".into(),
                        ))
                    }
                    Err(_) => {
                        poller.abort();
                        return Err((StatusCode::BadTimeout, "no session after 30 s".into()));
                    }
                }
            }
            Ok((session, erx, poller))
        };
        let r: Result<_, (StatusCode, String)> = attempt.await;
        match r {
            Ok(x) => return Ok(Some(x)),
            Err((status, msg)) => {
                let unreachable = matches!(
                    status,
                    StatusCode::BadNotConnected
                        | StatusCode::BadConnectionClosed
                        | StatusCode::BadCommunicationError
                        | StatusCode::BadTimeout
                        | StatusCode::BadServerNotConnected
                        | StatusCode::BadSecureChannelClosed
                        | StatusCode::BadTcpInternalError
                );
                if first && !unreachable {
                    return Err(msg);
                }
                let wait = Duration::from_millis((250u64 << failures.min(6)).min(10_000));
                if failures == 0 || failures.is_power_of_two() {
                    tracing::warn!(source = %plan.id, "{msg}; retrying in {wait:?}");
                }
                failures = failures.saturating_add(1);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Creates the subscriptions and monitored items. Returns the items that
/// failed as `(what, why)`.
pub(super) async fn subscribe(
    session: &Session,
    plan: &OpcUaSourcePlan,
    items: &[Item],
    subs: &[(usize, Vec<usize>)],
    per_call: usize,
    tx: &SyncSender<Ev>,
    stats: Option<&crate::stats::Stats>,
) -> Result<Vec<(String, String)>, String> {
    let mut failed = Vec::new();
    let mut revised = 0usize;
    let mut created = 0u64;
    for (key, (g, members)) in subs.iter().enumerate() {
        let group = &plan.groups[*g];
        let sub_id = session
            .create_subscription(
                Duration::from_millis(group.publishing_interval_ms),
                group.lifetime_count.max(3 * group.keep_alive_count),
                group.keep_alive_count,
                0,
                0,
                true,
                Notify {
                    tx: tx.clone(),
                    sub: key,
                },
            )
            .await
            .map_err(|e| format!("CreateSubscription (group `{}`): {e}", group.name))?;
        // How long the server keeps it without publish requests: its revised
        // publishing interval times its revised lifetime count.
        let life = {
            let state = session.subscription_state().lock();
            state
                .get(sub_id)
                .map(|s| s.publishing_interval().as_millis() as i64 * i64::from(s.lifetime_count()))
        };
        let life = life.unwrap_or(
            group.publishing_interval_ms as i64
                * i64::from(group.lifetime_count.max(3 * group.keep_alive_count)),
        );
        send(tx, Ev::Lifetime { sub: key, ms: life });
        let filter = {
            let (dt, v) = match group.deadband {
                Deadband::None => (DeadbandType::None, 0.0),
                Deadband::Absolute(v) => (DeadbandType::Absolute, v),
                Deadband::Percent(v) => (DeadbandType::Percent, v),
            };
            if dt == DeadbandType::None && group.trigger == DataChangeTrigger::StatusValue {
                ExtensionObject::null()
            } else {
                ExtensionObject::from_message(DataChangeFilter {
                    trigger: group.trigger,
                    deadband_type: dt as u32,
                    deadband_value: v,
                })
            }
        };
        for chunk in members.chunks(per_call.max(1)) {
            let reqs: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .map(|&i| MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id: items[i].node.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: i as u32 + 1,
                        sampling_interval: group.sampling_interval_ms,
                        filter: filter.clone(),
                        queue_size: group.queue_size,
                        discard_oldest: group.discard_oldest,
                    },
                })
                .collect();
            let results = session
                .create_monitored_items(sub_id, TimestampsToReturn::Both, reqs)
                .await
                .map_err(|e| format!("CreateMonitoredItems (group `{}`): {e}", group.name))?;
            for (&i, r) in chunk.iter().zip(results) {
                let r = r.result;
                if !r.status_code.is_good() {
                    failed.push((
                        format!("node {} (tag {})", items[i].node, items[i].tag),
                        format!("the server refused the monitored item: {}", r.status_code),
                    ));
                } else {
                    created += 1;
                }
                if r.status_code.is_good()
                    && (r.revised_queue_size < group.queue_size.max(1)
                        || (group.sampling_interval_ms > 0.0
                            && r.revised_sampling_interval > group.sampling_interval_ms))
                {
                    revised += 1;
                }
            }
        }
    }
    if let Some(st) = stats {
        st.event("opcua: monitored items created", created);
        st.set_level(crate::stats::OPCUA_MONITORED_ITEMS, &plan.id, created);
    }
    if revised > 0 {
        tracing::info!(
            source = %plan.id,
            items = revised,
            "the server revised the sampling interval or queue size of some items (slower or smaller than asked)"
        );
    }
    Ok(failed)
}

pub(super) async fn session_task(
    plan: OpcUaSourcePlan,
    tx: SyncSender<Ev>,
    mut ctl: tokio::sync::mpsc::UnboundedReceiver<Ctl>,
    stop: Arc<AtomicBool>,
    (stats, share): (Arc<crate::stats::Stats>, (usize, usize)),
) -> Result<(), String> {
    let mut client = conn::client(&plan.conn)?;
    stats.set_connected(&plan.id, false);
    // Items, and per subscription: (group, member item indices).
    type Resolved = (Vec<Item>, Vec<(usize, Vec<usize>)>);
    let mut resolved: Option<Resolved> = None;
    let mut first = true;
    loop {
        let Some((session, mut events, poller)) = open(&mut client, &plan, &stop, first).await?
        else {
            return Ok(());
        };
        let lim = limits(&session).await;
        if resolved.is_none() {
            let (mut items, failed) =
                nodes::resolve(&session, &plan.nodes, &plan.browse, lim.browse)
                    .await
                    .map_err(|e| conn::explain(&plan.conn, StatusCode::Good, &e))?;
            if items.is_empty() {
                let why: Vec<String> = failed.iter().map(|(w, y)| format!("{w}: {y}")).collect();
                return Err(format!(
                    "none of the configured nodes exist on {} ({})",
                    plan.conn.endpoint,
                    why.join("; ")
                ));
            }
            // A cluster's process monitors its share of the nodes.
            if !nodes::keep_share(&mut items, share) {
                tracing::info!(source = %plan.id, "OPC UA nodes resolved: none is this process's");
                return Ok(());
            }
            let (subs, info) = plan_subscriptions(&plan, &items);
            tracing::info!(source = %plan.id, items = items.len(), subscriptions = subs.len(), "OPC UA nodes resolved");
            send(&tx, Ev::Items(Arc::new(info)));
            if !failed.is_empty() {
                send(&tx, Ev::Unresolved(failed));
            }
            resolved = Some((items, subs));
        } else {
            // A whole new session after the old one could not be recovered.
            send(&tx, Ev::Reconnected { new_session: true });
        }
        let (items, subs) = resolved.as_ref().expect("resolved above");
        let failed = subscribe(
            &session,
            &plan,
            items,
            subs,
            lim.monitored,
            &tx,
            Some(&stats),
        )
        .await?;
        if !failed.is_empty() {
            send(&tx, Ev::Unresolved(failed));
        }
        first = false;
        tracing::info!(source = %plan.id, endpoint = %plan.conn.endpoint, "OPC UA subscriptions active");
        stats.set_connected(&plan.id, true);

        // Steady state.
        let mut failures = 0u32;
        let ended = loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(Ok(SessionPollResult::ConnectionLost(s))) => {
                        tracing::warn!(source = %plan.id, "OPC UA connection lost: {s}");
                        stats.set_connected(&plan.id, false);
                        send(&tx, Ev::Lost(format!("connection lost ({s})")));
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(s))) => {
                        if failures == 0 || failures.is_power_of_two() {
                            tracing::warn!(source = %plan.id, "OPC UA reconnect failed: {s}");
                        }
                        failures = failures.saturating_add(1);
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        failures = 0;
                        let new_session = matches!(mode, SessionConnectMode::NewSession(_));
                        tracing::info!(source = %plan.id, new_session, "OPC UA reconnected");
                        stats.set_connected(&plan.id, true);
                        // async-opcua 0.19 does not always restart publishing
                        // after recreating subscriptions; ask for it.
                        session.trigger_publish_now();
                        // A reactivated session may have lost its
                        // subscriptions (their lifetime ran out while the
                        // link was down): the server then sends nothing
                        // more. Ask; if they are gone, start over.
                        if !new_session {
                            if let Some(why) = subscriptions_lost(&session).await {
                                tracing::warn!(source = %plan.id, "{why}; opening a new session");
                                let _ = tokio::time::timeout(Duration::from_secs(3), session.disconnect()).await;
                                break why;
                            }
                        }
                        send(&tx, Ev::Reconnected { new_session });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(s)) => break format!("session ended: {s}"),
                    None => break "session event loop ended".to_string(),
                },
                c = ctl.recv() => {
                    if let Some(why) = control(&session, &plan, items, subs, lim, &tx, c).await {
                        break why;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Relaxed) {
                        let _ = tokio::time::timeout(Duration::from_secs(3), session.disconnect()).await;
                        poller.abort();
                        return Ok(());
                    }
                }
            }
        };
        poller.abort();
        stats.set_connected(&plan.id, false);
        tracing::warn!(source = %plan.id, "{ended}; opening a new session");
        send(&tx, Ev::Lost(ended));
    }
}

/// Carries out one request of the decoder; `Some(why)` ends the session.
async fn control(
    session: &Session,
    plan: &OpcUaSourcePlan,
    items: &[Item],
    subs: &[(usize, Vec<usize>)],
    lim: Limits,
    tx: &SyncSender<Ev>,
    c: Option<Ctl>,
) -> Option<String> {
    match c {
        Some(Ctl::Republish { sub, seqs }) => {
            let sub_id = current_sub_id(session, subs, sub);
            for seq in seqs {
                let r = match sub_id {
                    Some(id) => session.republish(id, seq).await.map_err(|e| e.status()),
                    None => Err(StatusCode::BadSubscriptionIdInvalid),
                };
                match r {
                    Ok(msg) => {
                        let (values, _) = split(msg.notification_data.unwrap_or_default());
                        send(
                            tx,
                            Ev::Data {
                                sub,
                                seq,
                                values,
                                republished: true,
                            },
                        );
                    }
                    Err(status) => {
                        send(
                            tx,
                            Ev::RepublishFailed {
                                sub,
                                missing: seq,
                                status,
                            },
                        );
                        break;
                    }
                }
            }
        }
        Some(Ctl::History(req)) => {
            let done = super::history::read(session, items, &req, tx).await;
            send(tx, Ev::HistoryDone(done));
        }
        Some(Ctl::Restart(why)) => {
            let _ = tokio::time::timeout(Duration::from_secs(3), session.disconnect()).await;
            return Some(why);
        }
        Some(Ctl::Read { handles }) => {
            for chunk in handles.chunks(lim.read.max(1)) {
                let reads: Vec<ReadValueId> = chunk
                    .iter()
                    .map(|h| ReadValueId {
                        node_id: items[*h as usize - 1].node.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    })
                    .collect();
                match session.read(&reads, TimestampsToReturn::Both, 0.0).await {
                    Ok(vals) => {
                        send(tx, Ev::Read(chunk.iter().copied().zip(vals).collect()));
                    }
                    Err(e) => {
                        tracing::warn!(source = %plan.id, "reading current values after a gap: {e}")
                    }
                }
            }
        }
        None => {}
    }
    None
}

/// Whether the server still has this session's subscriptions (asked with
/// SetPublishingMode(enabled), which changes nothing of a live one).
async fn subscriptions_lost(session: &Session) -> Option<String> {
    let ids = session.subscription_state().lock().subscription_ids()?;
    match session.set_publishing_mode(&ids, true).await {
        Ok(statuses) => statuses
            .iter()
            .find(|s| s.is_bad())
            .map(|s| format!("the server no longer has the subscriptions ({s})")),
        Err(e) => Some(format!(
            "the server did not answer for its subscriptions ({e})"
        )),
    }
}

/// The server's id of subscription `key` now (it changes when the client
/// recreates subscriptions after a new session).
pub(super) fn current_sub_id(
    session: &Session,
    subs: &[(usize, Vec<usize>)],
    key: usize,
) -> Option<u32> {
    let handle = subs.get(key)?.1.first().map(|i| *i as u32 + 1)?;
    let state = session.subscription_state().lock();
    for id in state.subscription_ids()? {
        if let Some(s) = state.get(id) {
            if s.monitored_items().any(|m| m.client_handle() == handle) {
                return Some(id);
            }
        }
    }
    None
}

/// Subscriptions: per group, at most `max_items_per_subscription` items
/// each, as (group, member item indices); and each item as the decoder sees it.
fn plan_subscriptions(
    plan: &OpcUaSourcePlan,
    items: &[Item],
) -> (Vec<(usize, Vec<usize>)>, Vec<ItemInfo>) {
    let mut subs: Vec<(usize, Vec<usize>)> = Vec::new();
    for (g, group) in plan.groups.iter().enumerate() {
        let members: Vec<usize> = (0..items.len()).filter(|&i| items[i].group == g).collect();
        for c in members.chunks(group.max_items_per_subscription.max(1)) {
            subs.push((g, c.to_vec()));
        }
    }
    let mut sub_of = vec![0usize; items.len()];
    for (k, (_, m)) in subs.iter().enumerate() {
        for &i in m {
            sub_of[i] = k;
        }
    }
    let info: Vec<ItemInfo> = items
        .iter()
        .enumerate()
        .map(|(i, it)| ItemInfo {
            tag: it.tag.clone(),
            node: it.node.to_string(),
            sub: sub_of[i],
        })
        .collect();
    (subs, info)
}
