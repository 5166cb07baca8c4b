use super::*;

#[test]
fn stream_ids_in_the_forms_encoders_send() {
    let r = parse_stream_id("#!::r=live/abc,m=publish").unwrap();
    assert_eq!(
        (r.app.as_str(), r.key.as_str(), r.mode.as_deref()),
        ("live", "abc", Some("publish"))
    );
    let r = parse_stream_id("#!::m=publish,r=tok.en-1,u=someone").unwrap();
    assert_eq!((r.app.as_str(), r.key.as_str()), (TOKEN_APP, "tok.en-1"));
    let r = parse_stream_id("live/plainkey").unwrap();
    assert_eq!(
        (r.app.as_str(), r.key.as_str(), r.mode),
        ("live", "plainkey", None)
    );
    // The key may itself hold a slash after the app.
    let r = parse_stream_id("#!::r=app/k/ey").unwrap();
    assert_eq!((r.app.as_str(), r.key.as_str()), ("app", "k/ey"));
}

#[test]
fn stream_ids_name_the_backup_encoder_and_the_rendition() {
    let r = parse_stream_id("#!::r=live/abc,m=publish,backup=1,rendition=360p").unwrap();
    assert_eq!(r.key, "abc");
    assert_eq!(r.options.role(), crate::publish::Role::Backup);
    assert_eq!(r.options.rendition.as_deref(), Some("360p"));
    let r = parse_stream_id("#!::r=live/abc?backup=1&rendition=hd,m=publish").unwrap();
    assert_eq!((r.key.as_str(), r.options.backup), ("abc", true));
    assert_eq!(r.options.rendition.as_deref(), Some("hd"));
    let r = parse_stream_id("#!::r=live/abc").unwrap();
    assert_eq!(r.options, PushOptions::default());
    for bad in [
        "#!::r=live/abc,rendition=../x",
        "#!::r=live/abc?rendition=UPPER",
        "#!::r=live/abc?rendition=",
        "#!::r=live/abc,rendition=waytoolongrenditionname",
    ] {
        assert!(
            matches!(parse_stream_id(bad), Err(StreamIdError::BadOption(_))),
            "{bad}"
        );
    }
}

#[test]
fn malformed_stream_ids_are_refused_with_a_reason() {
    assert_eq!(parse_stream_id(""), Err(StreamIdError::Empty));
    assert_eq!(
        parse_stream_id("#!::m=publish"),
        Err(StreamIdError::NoResource)
    );
    assert_eq!(parse_stream_id("#!::r=/"), Err(StreamIdError::NoResource));
    assert!(matches!(
        parse_stream_id("#!::r=a,junk"),
        Err(StreamIdError::Malformed(_))
    ));
}

mod unauthenticated {
    use super::super::stats::LinkStats;
    use super::super::*;
    use crate::admission::AdmissionConfig;
    use crate::auth::{StaticKeys, StreamKey};
    use strom_relay::{Broadcasts, CacheLimits, Namespace};

    const KEY: &str = "srt-test-key-0123456789";

    fn context(limits: AdmissionConfig) -> (tokio::runtime::Runtime, Arc<SrtContext>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ctx = SrtContext::new(
            Arc::new(StaticKeys::new(vec![StreamKey {
                app: "live".into(),
                key: KEY.into(),
                namespace: Namespace::parse("t/e/s").unwrap(),
                srt_passphrase: Some("correct-horse-battery".into()),
            }])),
            Publications::new(Broadcasts::new(), CacheLimits::default(), None, None),
            Arc::default(),
            runtime.handle().clone(),
            Admission::new(limits),
        );
        (runtime, ctx)
    }

    fn from(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 4000))
    }

    #[test]
    fn admissions_that_never_become_connections_are_bounded_and_forgotten() {
        let (_runtime, ctx) = context(AdmissionConfig {
            deadline_secs: 10,
            max_connections: 4,
            max_connections_per_address: 2,
        });
        let id = format!("#!::r=live/{KEY},m=publish");
        let t0 = Instant::now();
        // Callers with the key (it travels in clear) but without the
        // passphrase: the callback admits them, libsrt then refuses
        // them, and no connection ever takes their admission.
        let mut ns = 100;
        let mut admit = |ip: &str, at: Instant| {
            let (admitted, passphrase) = ctx.decide(5, &id, from(ip), at)?;
            assert!(passphrase.is_some());
            ns += 1;
            ctx.hold(ns, admitted);
            Ok::<_, Refusal>(())
        };
        admit("192.0.2.1", t0).unwrap();
        admit("192.0.2.1", t0).unwrap();
        let crowded = admit("192.0.2.1", t0).unwrap_err();
        assert_eq!(
            (crowded.code, crowded.reason),
            (ffi::SRT_REJX_OVERLOAD, "too_many_from_address")
        );
        admit("192.0.2.2", t0).unwrap();
        admit("192.0.2.3", t0).unwrap();
        let crowded = admit("192.0.2.4", t0).unwrap_err();
        assert_eq!(crowded.reason, "too_many_unauthenticated");
        assert_eq!(ctx.pending().len(), 4);
        assert_eq!(ctx.admission.count(Transport::Srt), 4);
        // Past the deadline they are forgotten and their places free.
        let later = t0 + Duration::from_secs(11);
        admit("192.0.2.1", later).unwrap();
        assert_eq!(ctx.pending().len(), 1);
        assert_eq!(ctx.admission.count(Transport::Srt), 1);
        // A refused caller keeps no place.
        let refused = ctx
            .decide(5, "#!::r=live/no-such-key-000000", from("192.0.2.1"), later)
            .err()
            .expect("an unknown key is refused");
        assert_eq!(refused.reason, "unknown_key");
        assert_eq!(ctx.admission.count(Transport::Srt), 1);
    }

    fn panicking_push(
        _sock: ffi::SRTSOCKET,
        publisher: Publisher,
        options: &PushOptions,
        _label: &str,
        _remote: Option<SocketAddr>,
        ctx: &SrtContext,
    ) -> anyhow::Result<()> {
        let _session = ctx
            .publications
            .claim(publisher.namespace.clone(), options)
            .expect("the stream is free");
        // What `sample` does on a live link.
        ctx.counters.links.lock().unwrap().insert(
            link_key(&publisher.namespace, options),
            LinkStats::default(),
        );
        panic!("a demuxer bug");
    }

    fn quiet_push(
        _sock: ffi::SRTSOCKET,
        publisher: Publisher,
        options: &PushOptions,
        _label: &str,
        _remote: Option<SocketAddr>,
        ctx: &SrtContext,
    ) -> anyhow::Result<()> {
        let _session = ctx
            .publications
            .claim(publisher.namespace, options)
            .expect("the stream is free again");
        Ok(())
    }

    #[test]
    fn a_panicking_push_ends_its_own_connection_closed_and_forgotten() {
        startup();
        let (_runtime, ctx) = context(AdmissionConfig::default());
        let id = format!("#!::r=live/{KEY},m=publish");
        let (admitted, _) = ctx.decide(5, &id, None, Instant::now()).unwrap();
        let namespace = admitted.publisher.namespace.clone();
        let options = admitted.options.clone();
        // SAFETY: a fresh socket of our own, never connected.
        let sock = unsafe { ffi::srt_create_socket() };
        assert_ne!(sock, ffi::SRT_INVALID_SOCK);

        ctx.live().insert(sock);
        serve_connection(sock, admitted, &ctx, panicking_push);

        assert_eq!(ctx.counters.ingest.panics.load(Ordering::Relaxed), 1);
        assert_eq!(ctx.counters.ingest.failed.load(Ordering::Relaxed), 1);
        assert!(
            ctx.counters.links.lock().unwrap().is_empty(),
            "link statistics left behind"
        );
        assert!(!ctx.publications.is_connected(&namespace, &options));
        // SAFETY: reads the state of an id; a closed one reads as closed.
        let state = unsafe { ffi::srt_getsockstate(sock) };
        assert!(state >= 7, "the socket was left open (state {state})");
        // The next push of the same stream is served as usual.
        let (admitted, _) = ctx.decide(5, &id, None, Instant::now()).unwrap();
        let sock = unsafe { ffi::srt_create_socket() };
        ctx.live().insert(sock);
        serve_connection(sock, admitted, &ctx, quiet_push);
        assert_eq!(ctx.counters.ingest.connections.load(Ordering::Relaxed), 2);
        assert_eq!(ctx.counters.ingest.failed.load(Ordering::Relaxed), 1);
    }
}
