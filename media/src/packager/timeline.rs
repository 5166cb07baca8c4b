//! Timestamp handling: 32-bit RTMP milliseconds → a 64-bit broadcast timeline → media time.

/// Extends wrapping 32-bit RTMP millisecond timestamps to 64 bits.
///
/// One extender is shared by audio and video: RTMP interleaves them within a few hundred
/// milliseconds, so each timestamp is taken as the 64-bit value nearest to the previous
/// one (of either track). That also keeps the tracks consistent when a broadcast starts
/// right at the 2^32 ms (~49.7 day) wrap.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extender {
    last: Option<u64>,
}

impl Extender {
    pub(crate) fn extend(&mut self, ts: u32) -> u64 {
        let ext = match self.last {
            None => u64::from(ts),
            Some(last) => {
                // The signed 32-bit difference picks the nearest 64-bit candidate.
                let delta = ts.wrapping_sub(last as u32) as i32;
                last.saturating_add_signed(i64::from(delta))
            }
        };
        self.last = Some(ext);
        ext
    }
}

/// Maps extended encoder timestamps onto the broadcast timeline (milliseconds).
///
/// A fresh broadcast uses the encoder's timestamps unchanged. A resumed broadcast maps
/// the first timestamp of the new session onto the resume point, because encoders
/// restart from 0 when they reconnect and media time must keep increasing.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    extender: Extender,
    resume_ms: Option<u64>,
    session_base: Option<u64>,
}

impl Timeline {
    pub(crate) fn new(resume_ms: Option<u64>) -> Self {
        Timeline {
            extender: Extender::default(),
            resume_ms,
            session_base: None,
        }
    }

    /// Broadcast time in milliseconds for an RTMP timestamp.
    pub(crate) fn broadcast_ms(&mut self, rtmp_ms: u32) -> u64 {
        let ext = self.extender.extend(rtmp_ms);
        match self.resume_ms {
            None => ext,
            Some(resume) => {
                let base = *self.session_base.get_or_insert(ext);
                // A tag slightly older than the session's first one (audio a few ms behind
                // video) lands just before the resume point, never below zero; the
                // per-track monotonic clamp then keeps decode times increasing.
                let delta = ext as i128 - base as i128;
                (resume as i128 + delta).clamp(0, u64::MAX as i128) as u64
            }
        }
    }
}

/// `value * num / den` without overflow for any u64 value and u32 rates (floor).
pub(crate) fn rescale(value: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    let r = u128::from(value) * u128::from(num) / u128::from(den);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// Like [`rescale`] but rounding up, for "end of media" points that must not overlap.
pub(crate) fn rescale_ceil(value: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    let r = (u128::from(value) * u128::from(num)).div_ceil(u128::from(den));
    u64::try_from(r).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extender_handles_wrap_and_jitter() {
        let mut e = Extender::default();
        assert_eq!(e.extend(u32::MAX - 10), u64::from(u32::MAX) - 10);
        assert_eq!(e.extend(5), (1u64 << 32) + 5);
        // Audio a little behind video across the wrap.
        assert_eq!(e.extend(u32::MAX - 2), u64::from(u32::MAX) - 2);
        assert_eq!(e.extend(40), (1u64 << 32) + 40);
    }

    #[test]
    fn resumed_timeline_starts_at_resume_point() {
        let mut t = Timeline::new(Some(10_000));
        assert_eq!(t.broadcast_ms(0), 10_000);
        assert_eq!(t.broadcast_ms(33), 10_033);
        let mut t = Timeline::new(Some(5));
        assert_eq!(t.broadcast_ms(100), 5);
        assert_eq!(t.broadcast_ms(50), 0, "clamped at zero");
        let mut t = Timeline::new(None);
        assert_eq!(t.broadcast_ms(1234), 1234);
    }

    proptest! {
        #[test]
        fn extension_is_monotonic_for_forward_steps(
            start in any::<u32>(),
            steps in proptest::collection::vec(0u32..100_000, 1..200),
        ) {
            let mut e = Extender::default();
            let mut ts = start;
            let mut expected = u64::from(start);
            prop_assert_eq!(e.extend(ts), expected);
            for s in steps {
                ts = ts.wrapping_add(s);
                expected += u64::from(s);
                prop_assert_eq!(e.extend(ts), expected);
            }
        }

        #[test]
        fn rescale_matches_float(v in 0u64..1u64 << 40, num in 1u64..200_000, den in 1u64..200_000) {
            let exact = rescale(v, num, den);
            let approx = (v as f64) * (num as f64) / (den as f64);
            prop_assert!((exact as f64 - approx).abs() <= approx * 1e-9 + 1.0);
            prop_assert!(rescale_ceil(v, num, den) - exact <= 1);
        }
    }
}
