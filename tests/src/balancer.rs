//! A small TCP load balancer for tests, as an operator would put in front
//! of control-plane replicas: each connection goes to the next backend in
//! turn (no stickiness), and to the one after it when a backend refuses the
//! connection (HAProxy's `redispatch`, nginx's `proxy_next_upstream error`).
//! Nothing is retried once bytes have flowed: a request in flight on a
//! machine that dies is the client's to retry, as behind a real balancer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Balancer {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Balancer {
    pub fn start(backends: Vec<SocketAddr>) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("balancer runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("balancer listener");
        let addr = listener.local_addr().expect("balancer address");
        let backends = Arc::new(backends);
        let turn = Arc::new(AtomicUsize::new(0));
        rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let first = turn.fetch_add(1, Ordering::Relaxed);
                let backends = backends.clone();
                tokio::spawn(async move {
                    for k in 0..backends.len() {
                        let backend = backends[(first + k) % backends.len()];
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                            let _ = outbound.set_nodelay(true);
                            let _ = inbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                    // Every backend refused: the client sees the connection
                    // closed without an answer.
                });
            }
        });
        Balancer { addr, rt: Some(rt) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
