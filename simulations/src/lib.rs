//! Load generators and simulations that drive real strom services.
//!
//! `strom-load` (see `src/bin/strom-load.rs` and the README) puts MoQT and
//! LL-HLS viewers on an edge and reports delivery, latency, loss and the
//! edge's own CPU and memory figures. The pieces live here so that tests and
//! other simulations can reuse them.

pub mod edge_metrics;
pub mod histogram;
pub mod hls;
pub mod http;
pub mod moq;
pub mod report;
pub mod stats;
