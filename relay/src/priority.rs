//! QUIC send priority in the direction MoQT means it.
//!
//! In MoQT a lower publisher priority is more important (draft-18); quinn
//! sends streams with a *higher* priority first. moq-transport 0.17 hands the
//! MoQT value to quinn unchanged, so under congestion the least important
//! track (video, priority 2) starved the most important one (audio, 1): a
//! viewer on a 2 Mbit/s link to a 3 Mbit/s stream got video and no audio.
//! This session wrapper inverts the value on its way to quinn; what goes on
//! the wire stays as MoQT defines it. Control and request streams go first
//! of all, or a congested link delivers media for a track whose SUBSCRIBE_OK
//! is still queued and the subscriber discards it.

use bytes::Bytes;
use web_transport_quinn as wt;
use web_transport_trait as wtt;

/// A WebTransport/QUIC session whose send streams take MoQT priorities.
#[derive(Clone)]
pub(crate) struct MoqtPrioritySession(pub wt::Session);

/// A send stream that maps a MoQT priority to quinn's.
pub(crate) struct MoqtPrioritySend(wt::SendStream);

/// quinn's priority for a MoQT priority: 0 (most important) sends first.
pub(crate) fn quinn_priority(moqt: u8) -> i32 {
    i32::from(u8::MAX - moqt)
}

/// Control and request streams (SETUP, SUBSCRIBE_OK, …) go before any media:
/// a subscriber drops objects of a track whose SUBSCRIBE_OK it has not seen.
pub(crate) const CONTROL_PRIORITY: i32 = 1024;

fn control(send: wt::SendStream) -> MoqtPrioritySend {
    let _ = send.set_priority(CONTROL_PRIORITY);
    MoqtPrioritySend(send)
}

impl wtt::SendStream for MoqtPrioritySend {
    type Error = <wt::SendStream as wtt::SendStream>::Error;

    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        wtt::SendStream::write(&mut self.0, buf).await
    }

    fn set_priority(&mut self, order: u8) {
        let _ = self.0.set_priority(quinn_priority(order));
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        wtt::SendStream::finish(&mut self.0)
    }

    fn reset(&mut self, code: u32) {
        wtt::SendStream::reset(&mut self.0, code)
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        wtt::SendStream::closed(&mut self.0).await
    }
}

impl wtt::Session for MoqtPrioritySession {
    type SendStream = MoqtPrioritySend;
    type RecvStream = <wt::Session as wtt::Session>::RecvStream;
    type Error = <wt::Session as wtt::Session>::Error;

    async fn accept_uni(&self) -> Result<Self::RecvStream, Self::Error> {
        wtt::Session::accept_uni(&self.0).await
    }

    async fn accept_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = wtt::Session::accept_bi(&self.0).await?;
        Ok((control(send), recv))
    }

    async fn open_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = wtt::Session::open_bi(&self.0).await?;
        Ok((control(send), recv))
    }

    async fn open_uni(&self) -> Result<Self::SendStream, Self::Error> {
        // The control stream keeps this; media streams get their MoQT priority.
        Ok(control(wtt::Session::open_uni(&self.0).await?))
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), Self::Error> {
        wtt::Session::send_datagram(&self.0, payload)
    }

    async fn recv_datagram(&self) -> Result<Bytes, Self::Error> {
        wtt::Session::recv_datagram(&self.0).await
    }

    fn max_datagram_size(&self) -> usize {
        wtt::Session::max_datagram_size(&self.0)
    }

    fn protocol(&self) -> Option<&str> {
        wtt::Session::protocol(&self.0)
    }

    fn close(&self, code: u32, reason: &str) {
        wtt::Session::close(&self.0, code, reason)
    }

    async fn closed(&self) -> Self::Error {
        wtt::Session::closed(&self.0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_important_moqt_priorities_send_first_in_quinn() {
        // MoQT: catalog 0 < audio 1 < video 2; quinn: higher sends first.
        assert!(quinn_priority(0) > quinn_priority(1));
        assert!(quinn_priority(1) > quinn_priority(2));
        assert_eq!(quinn_priority(255), 0);
        assert!(CONTROL_PRIORITY > quinn_priority(0));
    }
}
