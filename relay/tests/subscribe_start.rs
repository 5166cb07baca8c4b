//! A subscription that starts past the last object of a group the relay
//! holds whole (MoQT AbsoluteStart right after a tail that does not exist)
//! still learns that the group ended: a relay below waiting at that group's
//! "next object" must not wait for ever. Seen in the LAN test when every
//! child of a slow leader moved to the standby at once: their readers
//! waited at a finished group until something else closed it.
//!
//! A real MoQT server on loopback (raw QUIC) and a real client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moq_transport::coding::{KeyValuePairs, Location};
use moq_transport::message::{FilterType, SubscriptionFilter};
use moq_transport::serve::{self, TrackReaderMode};
use strom_relay::metrics::ServerCounters;
use strom_relay::tls::{Identity, Trust};
use strom_relay::{
    server_alpns, to_track_namespace, upstream, Broadcast, Broadcasts, CacheLimits, MoqtServer,
    Namespace, Object, Role, Source,
};

fn object(id: u64) -> Object {
    Object {
        id,
        payload: Bytes::from(vec![id as u8; 100]),
        meta: Default::default(),
        ext: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_past_a_whole_group_still_ends_that_group() {
    let dir = std::env::temp_dir().join(format!("strom-relay-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let identity = Identity::dev(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server = MoqtServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        identity.server_config(&server_alpns()).unwrap(),
    )
    .unwrap();
    let port = server.local_addr().unwrap().port();
    let broadcasts = Broadcasts::new();
    let namespace = Namespace::parse("t/e/s").unwrap();
    let broadcast = broadcasts.insert(Broadcast::new(
        namespace.clone(),
        Source::Local,
        CacheLimits::default(),
    ));
    let track = broadcast.create_track("video");
    // Group 7 is whole with objects 0..=2; group 8 has begun.
    for id in 0..3 {
        track.insert(7, object(id), Instant::now());
    }
    track.finish_group(7);
    track.insert(8, object(0), Instant::now());
    let counters = Arc::new(ServerCounters::new(Role::Agent));
    tokio::spawn(server.run(broadcasts, counters, None));
    let url = format!("moqt://127.0.0.1:{port}").parse().unwrap();
    let (session, mut subscriber) = upstream::connect(&url, &Trust::Pinned(identity.sha256()))
        .await
        .unwrap();
    tokio::spawn(session.run());

    // A relay below holds 7/0..=2 without knowing 7 is whole: it resumes at 7/3.
    let (writer, reader) = serve::Track::new(to_track_namespace(&namespace), "video").produce();
    let mut params = KeyValuePairs::default();
    params
        .set_subscription_filter(&SubscriptionFilter {
            filter_type: FilterType::AbsoluteStart,
            start_location: Some(Location::new(7, 3)),
            end_group_id: None,
        })
        .unwrap();
    let _subscription = subscriber
        .subscribe_open_with_params(writer, params)
        .await
        .unwrap();
    let Ok(TrackReaderMode::Subgroups(mut subgroups)) = reader.mode().await else {
        panic!("no subgroups");
    };
    // Streams may come in any order, and group 8's stays open: read each
    // group on its own and wait for group 7's end.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(subgroup)) = subgroups.next().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let group = subgroup.group_id;
                let mut ids = Vec::new();
                let clean = upstream::read_objects(subgroup, "video", |o| ids.push(o.id))
                    .await
                    .is_ok();
                let _ = tx.send((group, ids, clean));
            });
        }
    });
    let seven = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (group, ids, clean) = rx.recv().await.expect("a group");
            if group == 7 {
                return (ids, clean);
            }
        }
    })
    .await
    .expect("group 7 ends within 5 s");
    assert_eq!(seven, (vec![], true), "group 7: no objects, a clean end");
    let _ = std::fs::remove_dir_all(&dir);
}
