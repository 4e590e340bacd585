//! conduit: a Matrix homeserver in one self-contained binary.
//!
//! Layout (see ARCHITECTURE.md for the full code map and invariants):
//! - [`config`]: `conduit.toml`, environment overrides, validation;
//! - [`http`]: listeners, TLS, routing, request/response types (only place that knows hyper);
//! - [`api`]: one closed endpoint enum and one file per spec area;
//! - [`users`]: accounts, devices, tokens, user-interactive auth;
//! - [`media`]: the content repository (uploaded files, content-addressed);
//! - [`push`]: the durable queue of pushes to push gateways;
//! - [`federation`]: other homeservers: who we federate with, where they are, their keys, signed requests;
//! - [`rooms`]: the event pipeline (build, auth, persist) and room state;
//! - [`sync`]: `/sync` and filters;
//! - [`e2ee`]: device keys, cross-signing, to-device messages (end-to-end encryption support);
//! - [`crypto`]: signing key, canonical JSON signing, random tokens;
//! - [`events`]: PDUs per room version: parsing, ids, building, signing, redaction;
//! - [`storage`]: typed tables over sled (only place that knows sled);
//! - [`services`]: the shared state handed to every request;
//! - [`error`]: the error type and its single mapping to Matrix error codes.

pub mod api;
pub mod cache;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod e2ee;
pub mod email;
pub mod error;
pub mod events;
pub mod federation;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod http;
pub mod identity;
pub mod locks;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod push;
pub mod rate_limits;
pub mod rooms;
pub mod services;
pub mod storage;
pub mod sync;
pub mod users;
pub mod util;
