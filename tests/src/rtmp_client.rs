//! A scripted RTMP publisher for tests that need to send what ffmpeg never
//! would (truncated tags), built on rml_rtmp's client session.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

/// Completes only the RTMP handshake, for tests that then send raw chunks.
pub fn handshake(addr: &str) -> Result<TcpStream, String> {
    handshake_with_rest(addr).map(|(stream, _)| stream)
}

/// The handshake, and any bytes the server sent after it.
fn handshake_with_rest(addr: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut handshake = Handshake::new(PeerType::Client);
    stream
        .write_all(&handshake.generate_outbound_p0_and_p1().map_err(io)?)
        .map_err(io)?;
    let mut buf = vec![0u8; 65536];
    loop {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            return Err("closed during handshake".into());
        }
        match handshake.process_bytes(&buf[..n]).map_err(io)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).map_err(io)?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).map_err(io)?;
                return Ok((stream, remaining_bytes));
            }
        }
    }
}

/// One RTMP chunk (format 0, chunk stream 3) carrying an AMF0 command message
/// whose body is only the string "connect": fewer values than a command has.
pub fn short_amf0_command() -> Vec<u8> {
    let body = [0x02, 0x00, 0x07, b'c', b'o', b'n', b'n', b'e', b'c', b't'];
    let mut chunk = vec![0x03, 0, 0, 0, 0, 0, body.len() as u8, 20, 0, 0, 0, 0];
    chunk.extend_from_slice(&body);
    chunk
}

pub struct Publisher {
    stream: TcpStream,
    session: ClientSession,
}

fn io(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

impl Publisher {
    /// Connects, handshakes, and asks to publish `app`/`key`. Returns an error
    /// string if the server refuses or closes.
    pub fn connect(addr: &str, app: &str, key: &str) -> Result<Publisher, String> {
        let (stream, remaining) = handshake_with_rest(addr)?;
        let (session, initial) = ClientSession::new(ClientSessionConfig::new()).map_err(io)?;
        let mut p = Publisher { stream, session };
        p.send(initial)?;
        if !remaining.is_empty() {
            let r = p.session.handle_input(&remaining).map_err(io)?;
            p.send(r)?;
        }
        let r = p.session.request_connection(app.to_owned()).map_err(io)?;
        p.send(vec![r])?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))?;
        let r = p
            .session
            .request_publishing(key.to_owned(), PublishRequestType::Live)
            .map_err(io)?;
        p.send(vec![r])?;
        p.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))?;
        Ok(p)
    }

    fn send(&mut self, results: Vec<ClientSessionResult>) -> Result<(), String> {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.stream.write_all(&packet.bytes).map_err(io)?;
            }
        }
        Ok(())
    }

    fn wait_for(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.stream.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            let results = self.session.handle_input(&buf[..n]).map_err(io)?;
            let mut hit = false;
            for r in &results {
                if let ClientSessionResult::RaisedEvent(e) = r {
                    hit |= want(e);
                }
            }
            self.send(results)?;
            if hit {
                return Ok(());
            }
        }
    }

    pub fn video(&mut self, body: &[u8], ts: u32) -> Result<(), String> {
        let r = self
            .session
            .publish_video_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
            .map_err(io)?;
        self.send(vec![r])
    }

    pub fn audio(&mut self, body: &[u8], ts: u32) -> Result<(), String> {
        let r = self
            .session
            .publish_audio_data(Bytes::copy_from_slice(body), RtmpTimestamp::new(ts), false)
            .map_err(io)?;
        self.send(vec![r])
    }

    /// True once the server has closed the connection (reads EOF or reset).
    pub fn closed_by_server(&mut self, limit: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(limit));
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}
