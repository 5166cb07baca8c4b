//! strom-protocol: every message strom's services exchange, defined once.
//! Relays (origin, edges) and peer-agents serialise these types; the control
//! plane deserialises the same types, strictly (`deny_unknown_fields`), and
//! puts them in its OpenAPI document (feature `openapi`). A field added here
//! is added for both sides at once.
//!
//! Tokens, key sets and the revocation feed are defined once in
//! `strom-token`, next to the cryptography that gives them meaning.

#![warn(unreachable_pub)]

mod agents;
mod relay;

pub use agents::{AgentStats, P2pMode, RegisterAnswer, RegisterRequest, RosterEntry, Site};
pub use relay::{
    paths, EventFigures, QoeSums, RelayKind, RelayStatus, SrtSecrets, StreamStatus, LONG_POLL_SECS,
    STATUS_EVERY_SECS,
};
