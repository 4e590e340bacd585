//! The integration tests: one binary, one module per area. Each test starts a
//! real server on 127.0.0.1:0 (in-process, or the real binary where a process
//! must be killed) and talks to it over HTTP.

mod harness;

mod account;
mod admin;
mod api_standards;
mod architecture;
mod clients;
mod devices;
mod directory;
mod e2ee;
mod email;
mod event_stream;
mod federation;
mod fuzz_corpus;
mod hardening;
mod history;
mod login;
mod media;
mod metrics;
mod operators;
mod packaging;
mod policy;
mod process;
mod profile;
mod push;
mod push_gateway;
mod rate_limits;
mod registration;
mod relations;
mod room_directory;
mod rooms;
mod search;
mod server_keys;
mod smtp;
mod spec_versions;
mod state_resolution;
mod synapse;
mod sync;
mod tls;
mod url_preview;
