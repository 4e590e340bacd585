//! The HTTP layer: the only module that knows hyper and rustls.
//!
//! Spec: client-server API "API Standards" and "Web Browser Clients".
//! [`server`] runs listeners and connections, [`tls`] terminates TLS,
//! [`router`] maps paths to [`crate::api::Endpoint`]s, [`request`] and
//! [`response`] are what handlers see instead of hyper types; [`client`]
//! makes outgoing requests; [`operator_socket`] serves and reaches the
//! operators' socket.

pub mod client;
pub mod client_address;
pub mod connection;
pub mod metrics_listener;
pub mod operator_socket;
pub mod request;
pub mod response;
pub mod router;
pub mod server;
pub mod tls;

pub use request::Request;
pub use response::Response;
pub use server::{start, ServerHandle, StartError};
