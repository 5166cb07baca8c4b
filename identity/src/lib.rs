#![warn(unreachable_pub)]
//! strom's identity rules for the control plane: password policy and argon2id
//! hashing, account lockout, TOTP, single-use link secrets, participant CSV
//! import/export and outgoing mail.
//!
//! Everything that decides (policy checks, lockout transitions, TOTP replay,
//! link consumption, CSV validation) is sans-IO: it takes state, bytes and the
//! current time as arguments and returns the new state or a typed error, so the
//! control plane persists the result in its own transaction. Only [`mail`]
//! does I/O.

pub mod lockout;
pub mod mail;
pub mod participants_csv;
pub mod password;
pub mod secret_link;
pub mod totp;
