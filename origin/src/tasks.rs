//! The origin's background duties, each a loop that runs as one named part
//! of [`crate::Origin`] (see `strom_relay::tasks`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_relay::Access;

use crate::publish::Publications;
use crate::record::Recorder;

/// Ends broadcasts whose encoders left more than `linger` ago.
pub(crate) async fn expire_broadcasts(publications: Arc<Publications>, linger: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        publications.expire(linger, Instant::now());
    }
}

/// Deleting an event deletes its recordings (DATA-7): the control plane says
/// so in its revocation feed; a feed that fell behind is read again whole.
pub(crate) async fn delete_recordings_of_deleted_events(
    access: Arc<Access>,
    recorder: Arc<Recorder>,
) {
    let mut feed = access.revocations();
    loop {
        let deleted = access.verifier().revocations().deleted_events();
        for (tenant, event) in deleted {
            recorder.delete_event(&tenant, &event);
        }
        loop {
            match feed.recv().await {
                Ok(r) if r.kind == strom_token::RevocationKind::EventDeleted => {
                    recorder.delete_event(&r.tenant, &r.id)
                }
                Ok(_) => {}
                // Missed some: rescan the whole list.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                // The feed ends only with the access it belongs to.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

/// Retention (DATA-7): recordings older than `days` are deleted, checked at
/// start and hourly.
pub(crate) async fn expire_recordings(recorder: Arc<Recorder>, days: u32) {
    let retention = Duration::from_secs(u64::from(days) * 86_400);
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let recorder = recorder.clone();
        let _ = tokio::task::spawn_blocking(move || {
            recorder.expire(retention, std::time::SystemTime::now())
        })
        .await;
    }
}
