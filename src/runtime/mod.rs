//! What every role runs on, written once: watch caches that say when they are ready
//! ([`watch`]), the `/metrics`, `/healthz` and `/readyz` server and the stop signal
//! ([`health`]), Events on objects ([`events`]) and server-side apply of a status
//! ([`status`]). Roles build on these and never on each other.

pub mod events;
pub mod health;
pub mod status;
pub mod watch;
