//! Writing a group message to the group's members.
//!
//! A small group's message is delivered at once, by the sender: encoded as
//! a frame once and written to each member (see
//! [`Outbox::deliver`](crate::socket::outbound::Outbox::deliver)). A large group
//! (more than [`CHUNK`] members) gets a lane of its own, a task that takes
//! the group's messages in the order they were sent and, for each batch of
//! them, writes all their frames to each member in one write, the members
//! shared among several tasks ([`CHUNK`] each) so that every worker of the
//! runtime takes part and none is held for long. Why: a sender does not
//! wait for 10,000 writes (an HTTP notification is answered at once), a
//! burst of messages costs each member one write instead of one each, and
//! every member still gets a group's messages in order, because one lane
//! writes them one batch after another. A batch is compressed at most once
//! for all the members that negotiated permessage-deflate, those whose
//! socket is busy included: their queues hold the same frames (see
//! [`crate::socket::group_frames`]).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::socket::{group_frames::GroupFrames, outbound::Outbox};

/// Members one task writes to; a group larger than this has a lane.
pub(crate) const CHUNK: usize = 512;
/// Messages a lane writes at once, at most, and their bytes.
const BATCH: usize = 64;
const BATCH_BYTES: usize = 64 * 1024;
/// Messages that may wait in a lane; a sender beyond waits for room.
const LANE_DEPTH: usize = 256;

/// The sending end of a group's lane.
pub(crate) type Lane = mpsc::Sender<Utf8Bytes>;

/// The members of a group as they are now (none once it is gone).
pub(crate) trait Members: Send + Sync + 'static {
    fn members(&self, group: &str) -> Vec<Outbox>;
}

/// Delivers `messages` to each of `members`; how many it reached.
pub(crate) fn reach(members: &[Outbox], messages: &[Utf8Bytes]) -> usize {
    let frames = Arc::new(GroupFrames::new(messages));
    reach_encoded(members, &frames)
}

fn reach_encoded(members: &[Outbox], frames: &Arc<GroupFrames>) -> usize {
    members
        .iter()
        .filter(|member| member.deliver(frames))
        .count()
}

/// Starts the lane of `group`; it ends when every sending end is gone.
pub(crate) fn start_lane(group: String, members: Arc<dyn Members>) -> Lane {
    let (lane, messages) = mpsc::channel(LANE_DEPTH);
    tokio::spawn(run_lane(group, members, messages));
    lane
}

async fn run_lane(
    group: String,
    members: Arc<dyn Members>,
    mut messages: mpsc::Receiver<Utf8Bytes>,
) {
    while let Some(first) = messages.recv().await {
        let mut bytes = first.len();
        let mut batch = vec![first];
        while batch.len() < BATCH && bytes < BATCH_BYTES {
            match messages.try_recv() {
                Ok(message) => {
                    bytes += message.len();
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
        let now = members.members(&group);
        if !now.is_empty() {
            write_batch(now, batch).await;
        }
    }
}

/// Writes `batch` to every one of `members`, several tasks sharing them.
async fn write_batch(mut members: Vec<Outbox>, batch: Vec<Utf8Bytes>) {
    let frames = Arc::new(GroupFrames::new(&batch));
    drop(batch);
    let mut helpers = Vec::with_capacity(members.len() / CHUNK);
    while members.len() > CHUNK {
        let chunk = members.split_off(members.len() - CHUNK);
        let frames = frames.clone();
        helpers.push(tokio::spawn(async move {
            reach_encoded(&chunk, &frames);
        }));
    }
    reach_encoded(&members, &frames);
    for helper in helpers {
        let _ = helper.await;
    }
}
