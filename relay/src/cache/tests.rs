use super::*;

fn obj(id: u64, len: usize) -> Object {
    Object {
        id,
        payload: Bytes::from(vec![id as u8; len]),
        meta: ObjectMeta::default(),
        ext: None,
    }
}

#[tokio::test]
async fn reader_starts_at_newest_group_and_follows() {
    let t = TrackCache::new("video", CacheLimits::default());
    let now = Instant::now();
    t.insert(0, obj(0, 10), now);
    t.insert(0, obj(1, 10), now);
    t.insert(1, obj(0, 10), now);
    let mut r = t.reader_from_newest();
    match r.next().await {
        Some(Delivery::Object { group: 1, object }) => assert_eq!(object.id, 0),
        other => panic!("unexpected {other:?}"),
    }
    t.insert(1, obj(1, 10), now);
    t.finish_group(1);
    assert!(matches!(
        r.next().await,
        Some(Delivery::Object { group: 1, .. })
    ));
    assert!(matches!(
        r.next().await,
        Some(Delivery::GroupEnd { group: 1 })
    ));
    t.insert(2, obj(0, 10), now);
    assert!(matches!(
        r.next().await,
        Some(Delivery::Object { group: 2, .. })
    ));
    t.close();
    assert!(matches!(
        r.next().await,
        Some(Delivery::GroupEnd { group: 2 })
    ));
    assert!(r.next().await.is_none());
}

#[tokio::test]
async fn a_reader_at_an_object_resumes_exactly_there_across_groups() {
    let t = TrackCache::new("video", CacheLimits::default());
    let now = Instant::now();
    for id in 0..5 {
        t.insert(3, obj(id, 10), now);
    }
    t.finish_group(3);
    t.insert(4, obj(0, 10), now);
    // A relay that already holds group 3 up to object 2 resumes at 3/3.
    let mut r = t.reader_at_object(3, 3);
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(Delivery::Object { group, object }) = r.next().await {
            got.push((group, object.id));
        }
    }
    assert_eq!(got, vec![(3, 3), (3, 4), (4, 0)]);
}

/// Reads `n` deliveries (objects as (group, id), ends as (group, END)).
async fn read(r: &mut TrackReader, n: usize) -> Vec<(u64, u64)> {
    const END: u64 = u64::MAX;
    let mut got = Vec::new();
    while got.len() < n {
        match r.next().await {
            Some(Delivery::Object { group, object }) => got.push((group, object.id)),
            Some(Delivery::GroupEnd { group }) => got.push((group, END)),
            None => break,
        }
    }
    got
}

fn missed(t: &TrackCache) -> u64 {
    t.counters.groups_missed.load(Ordering::Relaxed)
}

fn waiting(wait: Duration) -> Arc<TrackCache> {
    TrackCache::new(
        "video",
        CacheLimits {
            gap_wait: wait,
            ..CacheLimits::default()
        },
    )
}

#[tokio::test]
async fn a_group_that_comes_after_a_newer_one_is_still_read_in_order() {
    const END: u64 = u64::MAX;
    let t = waiting(Duration::from_secs(5));
    let now = Instant::now();
    t.insert(7, obj(0, 10), now);
    t.finish_group(7);
    let mut r = t.reader_at(Some(7));
    // Group 9 arrives before group 8 (a parent short of uplink).
    t.insert(9, obj(0, 10), now);
    assert_eq!(read(&mut r, 2).await, vec![(7, 0), (7, END)]);
    assert!(r.poll().is_none(), "the reader waits for group 8");
    let late = t.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        late.insert(8, obj(0, 10), Instant::now());
        late.insert(8, obj(1, 10), Instant::now());
        late.finish_group(8);
    });
    assert_eq!(
        read(&mut r, 4).await,
        vec![(8, 0), (8, 1), (8, END), (9, 0)]
    );
    assert_eq!(missed(&t), 0, "a late group is not a lost one");
}

#[tokio::test]
async fn a_reader_waiting_at_a_missing_group_moves_on_after_the_wait() {
    const END: u64 = u64::MAX;
    let wait = Duration::from_millis(150);
    let t = waiting(wait);
    let now = Instant::now();
    t.insert(7, obj(0, 10), now);
    t.finish_group(7);
    t.insert(9, obj(0, 10), now);
    let mut r = t.reader_at(Some(7));
    let started = Instant::now();
    // Group 8 never comes: after the wait the reader ends it and goes on.
    assert_eq!(
        read(&mut r, 4).await,
        vec![(7, 0), (7, END), (8, END), (9, 0)]
    );
    assert!(started.elapsed() >= wait, "{:?}", started.elapsed());
    assert!(started.elapsed() < wait * 10, "{:?}", started.elapsed());
    assert_eq!(missed(&t), 1, "the lost group is counted");
}

#[tokio::test]
async fn without_a_wait_or_once_closed_a_missing_group_is_passed_at_once() {
    const END: u64 = u64::MAX;
    // No wait configured (origins, edges): as before, at once.
    let t = waiting(Duration::ZERO);
    let now = Instant::now();
    t.insert(7, obj(0, 10), now);
    t.finish_group(7);
    t.insert(9, obj(0, 10), now);
    let mut r = t.reader_at(Some(7));
    assert_eq!(read(&mut r, 3).await, vec![(7, 0), (7, END), (9, 0)]);
    assert_eq!(missed(&t), 1);
    // A closed track has nothing more to wait for.
    let t = waiting(Duration::from_secs(3600));
    t.insert(7, obj(0, 10), now);
    t.finish_group(7);
    t.insert(9, obj(0, 10), now);
    t.close();
    let mut r = t.reader_at(Some(7));
    let got = tokio::time::timeout(Duration::from_secs(5), read(&mut r, 4))
        .await
        .expect("a closed track does not wait");
    assert_eq!(got, vec![(7, 0), (7, END), (8, END), (9, 0)]);
    assert_eq!(missed(&t), 1);
}

#[test]
fn eviction_by_bytes_keeps_newest_group() {
    let t = TrackCache::new(
        "v",
        CacheLimits {
            max_age: Duration::from_secs(100),
            max_bytes: 100,
            ..CacheLimits::default()
        },
    );
    let now = Instant::now();
    for g in 0..10 {
        t.insert(g, obj(0, 60), now);
    }
    assert!(t.cached_bytes() <= 100 || t.with_groups(|g| g.len()) == 1);
    assert_eq!(t.largest(), Some((9, 0)));
    // A huge single group is still kept.
    t.insert(10, obj(0, 1000), now);
    assert_eq!(t.with_groups(|g| g.len()), 1);
}

#[test]
fn eviction_by_age() {
    let t = TrackCache::new(
        "v",
        CacheLimits {
            max_age: Duration::from_secs(5),
            max_bytes: usize::MAX,
            ..CacheLimits::default()
        },
    );
    let t0 = Instant::now();
    t.insert(0, obj(0, 1), t0);
    t.insert(1, obj(0, 1), t0 + Duration::from_secs(3));
    t.insert(2, obj(0, 1), t0 + Duration::from_secs(6));
    let ids: Vec<u64> = t.with_groups(|g| g.iter().map(|g| g.id).collect());
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn slow_reader_skips_evicted_groups() {
    let t = TrackCache::new(
        "v",
        CacheLimits {
            max_age: Duration::from_secs(100),
            max_bytes: 25,
            ..CacheLimits::default()
        },
    );
    let now = Instant::now();
    t.insert(0, obj(0, 10), now);
    let mut r = t.reader_from_newest();
    for g in 1..5 {
        t.insert(g, obj(0, 10), now);
    }
    match r.poll() {
        Some(Delivery::Object { group, .. }) => assert!(group >= 3),
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.counters.objects_skipped.load(Ordering::Relaxed) > 0);
}

#[test]
fn backfill_accepts_older_groups_in_order() {
    let t = TrackCache::new("v", CacheLimits::default());
    let now = Instant::now();
    assert!(t.insert(7, obj(0, 1), now));
    assert!(!t.insert(5, obj(0, 1), now));
    assert!(t.backfill(5, obj(0, 1), now));
    assert!(t.backfill(6, obj(0, 1), now));
    assert!(!t.backfill(7, obj(0, 1), now), "duplicate of live object");
    let ids: Vec<u64> = t.with_groups(|g| g.iter().map(|g| g.id).collect());
    assert_eq!(ids, vec![5, 6, 7]);
    // A reader created before history arrived still starts at the newest group.
    let mut r = t.reader_from_newest();
    assert!(matches!(r.poll(), Some(Delivery::Object { group: 7, .. })));
}

#[tokio::test]
async fn an_upstream_track_is_pending_until_answered() {
    let t = TrackCache::pending("video", CacheLimits::default());
    assert!(matches!(
        t.upstream_answer(Duration::from_millis(20)).await,
        UpstreamState::Pending
    ));
    let waiter = {
        let t = t.clone();
        tokio::spawn(async move { t.upstream_answer(Duration::from_secs(5)).await })
    };
    t.set_upstream(UpstreamState::Ready {
        largest: Some((4, 2)),
    });
    assert!(matches!(
        waiter.await.unwrap(),
        UpstreamState::Ready {
            largest: Some((4, 2))
        }
    ));
    let local = TrackCache::new("video", CacheLimits::default());
    assert!(matches!(
        local.upstream_answer(Duration::ZERO).await,
        UpstreamState::Ready { .. }
    ));
}

#[test]
fn duplicates_and_stragglers_are_ignored() {
    let t = TrackCache::new("v", CacheLimits::default());
    let now = Instant::now();
    assert!(t.insert(5, obj(0, 1), now));
    assert!(!t.insert(5, obj(0, 1), now));
    assert!(t.insert(5, obj(1, 1), now));
    t.finish_group(5);
    assert!(!t.insert(5, obj(2, 1), now));
    assert!(!t.insert(4, obj(0, 1), now));
}

fn produced(id: u64, produced_us: u64) -> Object {
    Object {
        id,
        payload: Bytes::from_static(b"x"),
        meta: ObjectMeta {
            duration_ticks: 0,
            producer_time_us: Some(produced_us),
        },
        ext: None,
    }
}

#[test]
fn a_viewer_waits_for_the_open_previous_group_not_the_newest() {
    let track = TrackCache::new("video", CacheLimits::default());
    let now = Instant::now();
    assert_eq!(track.frontier(), None);
    for id in 0..4 {
        track.insert(7, produced(id, 1_000 + id), now);
    }
    assert_eq!(track.frontier(), Some((7, 4, Some(1_003))));
    // A lagging parent sends the next group first: group 7 stays open.
    track.insert(8, produced(0, 2_000), now);
    track.insert(8, produced(1, 2_001), now);
    assert_eq!(track.frontier(), Some((7, 4, Some(1_003))));
    // Once group 7 is closed the viewer moves on to the newest.
    track.finish_group(7);
    assert_eq!(track.frontier(), Some((8, 2, Some(2_001))));
}

#[test]
fn a_viewer_waits_at_a_group_that_never_came_before_the_newest() {
    let track = TrackCache::new("video", CacheLimits::default());
    let now = Instant::now();
    for id in 0..3 {
        track.insert(7, produced(id, 1_000 + id), now);
    }
    track.finish_group(7);
    // The parent sends group 9 first; group 8 has not come at all.
    track.insert(9, produced(0, 3_000), now);
    // The viewer waits at 8/0, as late as the last object it had.
    assert_eq!(track.frontier(), Some((8, 0, Some(1_002))));
    // Repaired: group 8 is whole, the viewer waits after the newest.
    track.insert(8, produced(0, 2_000), now);
    track.finish_group(8);
    assert_eq!(track.frontier(), Some((9, 1, Some(3_000))));
}
