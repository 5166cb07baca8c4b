//! A FETCH for objects a relay does not hold yet waits a little for them
//! instead of being refused at once: a peer-agent repairing from another
//! agent that is itself repairing (when their common parent fails) gets the
//! objects as they arrive. A FETCH for objects that never come is still
//! refused, and one for objects already here is answered at once.
//!
//! A real MoQT server on loopback (raw QUIC, draft-18) and a real client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moq_transport::coding::{KeyValuePairs, Location, TrackName};
use moq_transport::message::StandaloneFetch;
use moq_transport::session::Subscriber;
use strom_relay::metrics::ServerCounters;
use strom_relay::tls::{Identity, Trust};
use strom_relay::{
    server_alpns, to_track_namespace, upstream, Broadcast, Broadcasts, CacheLimits, MoqtServer,
    Namespace, Object, Role, Source, TrackCache,
};

fn object(id: u64) -> Object {
    Object {
        id,
        payload: Bytes::from(vec![id as u8; 100]),
        meta: Default::default(),
        ext: None,
    }
}

/// A relay serving one local track with objects 0 and 1 of group 0, and a
/// client session to it.
async fn relay_and_client(dir: &std::path::Path) -> (Arc<TrackCache>, Subscriber, Namespace) {
    let identity = Identity::dev(dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
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
    track.insert(0, object(0), Instant::now());
    track.insert(0, object(1), Instant::now());
    let counters = Arc::new(ServerCounters::new(Role::Agent));
    tokio::spawn(server.run(broadcasts, counters, None));
    let url = format!("moqt://127.0.0.1:{port}").parse().unwrap();
    let (session, subscriber) = upstream::connect(&url, &Trust::Pinned(identity.sha256()))
        .await
        .unwrap();
    tokio::spawn(session.run());
    (track, subscriber, namespace)
}

fn from(namespace: &Namespace, group: u64, object: u64) -> StandaloneFetch {
    StandaloneFetch {
        track_namespace: to_track_namespace(namespace),
        track_name: TrackName::from("video"),
        start_location: Location::new(group, object),
        end_location: Location::new(group + 3, 0),
    }
}

/// Objects a FETCH delivered, as (group, object).
async fn fetched(
    subscriber: &mut Subscriber,
    request: StandaloneFetch,
) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut fetch = subscriber.fetch(request, KeyValuePairs::default()).await?;
    fetch.ok().await?;
    let mut got = Vec::new();
    while let Some((group, object)) = upstream::next_fetched(&mut fetch, "video").await? {
        got.push((group, object.id));
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_past_the_newest_object_waits_for_it() {
    let dir = std::env::temp_dir().join(format!("strom-relay-fetch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (track, mut subscriber, namespace) = relay_and_client(&dir).await;

    // What is here is answered at once.
    let got = fetched(&mut subscriber, from(&namespace, 0, 0))
        .await
        .unwrap();
    assert_eq!(got, vec![(0, 0), (0, 1)]);

    // Object 2 arrives 100 ms after it was asked for: the FETCH waits and
    // brings it (before, it was refused and asked again at the next check).
    let late = track.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        late.insert(0, object(2), Instant::now());
    });
    let got = fetched(&mut subscriber, from(&namespace, 0, 2))
        .await
        .unwrap();
    assert_eq!(got, vec![(0, 2)]);

    // Nothing comes: refused after the wait, not held open.
    let asked = Instant::now();
    let refused = fetched(&mut subscriber, from(&namespace, 0, 3)).await;
    assert!(refused.is_err(), "{refused:?}");
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(3), "held for {waited:?}");

    // Once newer objects are here, a FETCH is answered with what there is.
    track.finish_group(0);
    track.insert(1, object(0), Instant::now());
    let got = fetched(&mut subscriber, from(&namespace, 0, 2))
        .await
        .unwrap();
    assert_eq!(got, vec![(0, 2), (1, 0)]);
    let _ = std::fs::remove_dir_all(&dir);
}
