//! The core layer's link to Redis: one connection for memberships and
//! sends, and one that waits on this host's set (`BZPOPMIN` blocks the
//! connection it runs on), kept through outages. The waiting one reads
//! what others wrote, so the host speaks it itself, bounded
//! ([`super::bounded_pop`]).
//!
//! Memberships are added (`ZADD` scored now, `EXPIRE group_expiry`) and
//! removed (`ZREM`) as local groups come and go, all of them are added
//! again every quarter of `group_expiry` (so none expires while the host
//! has members) and after every reconnect, and all are removed when the
//! host stops. As for the pub/sub link, any call that errs or misses its
//! deadline ends the link: the broker is reported down and the link
//! reconnects with backoff (to the master the sentinels name then, with
//! Sentinel).

use std::{sync::Arc, time::Duration};

use redis::aio::MultiplexedConnection;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};
use tracing::{info, warn};

use super::{
    bounded_pop::{Dialer, Popped, Popper},
    core::{Core, CoreEntry},
    health::{deadline, failure_of, Failure, BROKER_TIMEOUT},
    sentinel::Target,
};

const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
const PING_EVERY: Duration = Duration::from_secs(1);
/// How long one `BZPOPMIN` waits for a message (whole seconds for Redis).
const POP_WAIT_SECS: u64 = 1;
/// Messages taken at once after a `BZPOPMIN` returned one.
const POP_AT_ONCE: usize = 256;
/// Memberships per pipelined call when adding them all again.
const ADD_AT_ONCE: usize = 500;

/// A change of memberships, for the link.
pub(super) enum Change {
    /// Add; the sender is told once Redis confirmed it.
    Add(CoreEntry, Option<oneshot::Sender<()>>),
    Remove(CoreEntry),
    /// Remove every membership (the host stops); then told.
    Close(oneshot::Sender<()>),
}

/// Opens the two connections; the caller bounds the time it takes.
pub(super) async fn open(
    client: &redis::Client,
    dialer: &Dialer,
) -> Result<(MultiplexedConnection, Popper), Failure> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    let commands = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(failure_of)?;
    let popping = dialer.open(client).await?;
    Ok((commands, popping))
}

fn add(pipe: &mut redis::Pipeline, core: &Core, membership: &CoreEntry, now: f64) {
    pipe.cmd("ZADD")
        .arg(&membership.key)
        .arg(now)
        .arg(&membership.channel)
        .ignore()
        .cmd("EXPIRE")
        .arg(&membership.key)
        .arg(core.settings.group_expiry.as_secs().max(1))
        .ignore();
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Adds every membership the host holds.
async fn add_all(core: &Core, connection: &mut MultiplexedConnection) -> Result<usize, Failure> {
    let all = core.memberships();
    for some in all.chunks(ADD_AT_ONCE) {
        let mut pipe = redis::pipe();
        let at = now();
        for membership in some {
            add(&mut pipe, core, membership, at);
        }
        deadline(pipe.query_async::<()>(connection)).await?;
    }
    Ok(all.len())
}

/// Keeps the link until the layer is dropped or closed.
pub(super) async fn run(
    target: Target,
    dialer: Dialer,
    where_: String,
    core: Arc<Core>,
    first: (MultiplexedConnection, Popper),
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let mut connections = Some(first);
    let mut after_outage = false;
    let mut backoff = BACKOFF.0;
    loop {
        if let Some((commands, popping)) = connections.take() {
            match serve(&core, commands, popping, &mut changes, after_outage).await {
                None => return,
                Some(failure) => {
                    core.health.down(&failure);
                    warn!(redis = %where_, reason = %failure, "lost the connection to Redis; local delivery goes on, Django and other hosts miss messages until it is back");
                    backoff = BACKOFF.0;
                    after_outage = true;
                }
            }
        }
        let until = tokio::time::sleep(backoff);
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                change = changes.recv() => match change {
                    None => return,
                    // Nothing to remove while Redis is away: memberships
                    // expire there on their own.
                    Some(Change::Close(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    // Covered by adding every membership on reconnect.
                    Some(_) => {}
                },
            }
        }
        let opened = match target.client().await {
            Ok(client) => tokio::time::timeout(BROKER_TIMEOUT, open(&client, &dialer))
                .await
                .unwrap_or(Err(Failure::Stalled)),
            Err(failure) => Err(failure),
        };
        match opened {
            Ok((commands, popping)) => {
                core.health.connected(commands.clone());
                connections = Some((commands, popping));
            }
            Err(failure) => {
                core.health.down(&failure);
                warn!(redis = %where_, reason = %failure, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis");
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Pops this host's set until a call fails.
async fn pop(core: Arc<Core>, mut popping: Popper) -> Failure {
    let inbox = core.inbox();
    loop {
        match popping.wait(&inbox, POP_WAIT_SECS).await {
            Ok(Some(popped)) => {
                take(&core, popped).await;
                // What else waits, in one call rather than one each; each
                // member is handed over as it is read.
                let count = match popping.more(&inbox, POP_AT_ONCE).await {
                    Ok(count) => count,
                    Err(failure) => return failure,
                };
                for _ in 0..count {
                    match popping.next().await {
                        Ok(popped) => take(&core, popped).await,
                        Err(failure) => return failure,
                    }
                }
            }
            Ok(None) => {}
            Err(failure) => return failure,
        }
    }
}

/// A member popped: received, or counted when it was too large to read.
async fn take(core: &Core, popped: Popped) {
    match popped {
        Popped::Member(payload) => core.received(&payload).await,
        Popped::TooLarge(size) => core.too_large(size),
    }
}

/// Ends the popping task with the link.
struct Popping(JoinHandle<Failure>);

impl Drop for Popping {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one link until it fails (`Some`) or the layer is gone (`None`).
async fn serve(
    core: &Arc<Core>,
    mut commands: MultiplexedConnection,
    popping: Popper,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    after_outage: bool,
) -> Option<Failure> {
    let mut waiting = Vec::new();
    while let Ok(change) = changes.try_recv() {
        match change {
            Change::Add(_, Some(done)) => waiting.push(done),
            Change::Close(done) => {
                let _ = remove_all(core, &mut commands).await;
                let _ = done.send(());
                return None;
            }
            _ => {}
        }
    }
    let groups = match add_all(core, &mut commands).await {
        Ok(groups) => groups,
        Err(failure) => return Some(failure),
    };
    for done in waiting {
        let _ = done.send(());
    }
    let mut popper = Popping(tokio::spawn(pop(core.clone(), popping)));
    core.health.up();
    if after_outage {
        info!(
            groups,
            "connected to Redis again; group memberships restored"
        );
    }
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let refresh_every = (core.settings.group_expiry / 4).max(Duration::from_secs(1));
    let mut refresh = tokio::time::interval_at(Instant::now() + refresh_every, refresh_every);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let step = tokio::select! {
            change = changes.recv() => match change {
                None => return None,
                Some(Change::Add(membership, done)) => {
                    let mut pipe = redis::pipe();
                    add(&mut pipe, core, &membership, now());
                    deadline(pipe.query_async::<()>(&mut commands)).await.map(|()| done)
                }
                Some(Change::Remove(membership)) => deadline(
                    redis::cmd("ZREM")
                        .arg(&membership.key)
                        .arg(&membership.channel)
                        .query_async::<()>(&mut commands),
                )
                .await
                .map(|()| None),
                Some(Change::Close(done)) => {
                    let _ = remove_all(core, &mut commands).await;
                    let _ = done.send(());
                    return None;
                }
            },
            _ = refresh.tick() => add_all(core, &mut commands).await.map(|_| None),
            _ = ping.tick() => deadline(redis::cmd("PING").query_async::<redis::Value>(&mut commands)).await.map(|_| None),
            ended = &mut popper.0 => Err(ended.unwrap_or_else(|e| Failure::Lost(e.to_string()))),
            failure = core.health.publish_failure() => Err(failure),
        };
        match step {
            Ok(Some(done)) => {
                let _ = done.send(());
            }
            Ok(None) => {}
            Err(failure) => return Some(failure),
        }
    }
}

/// Removes every membership (the host stops).
async fn remove_all(core: &Core, connection: &mut MultiplexedConnection) -> Result<(), Failure> {
    let all = core.memberships();
    for some in all.chunks(ADD_AT_ONCE) {
        let mut pipe = redis::pipe();
        for membership in some {
            pipe.cmd("ZREM")
                .arg(&membership.key)
                .arg(&membership.channel)
                .ignore();
        }
        deadline(pipe.query_async::<()>(connection)).await?;
    }
    Ok(())
}
