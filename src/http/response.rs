//! Responses as handlers build them, and their conversion to HTTP: JSON
//! content type, CORS headers on every response, errors as Matrix JSON.
//!
//! Spec: client-server API "Web Browser Clients" (CORS), "Standard error
//! response", "Rate limiting" (`Retry-After`).

use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;

use crate::error::Error;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub content_type: std::borrow::Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A 200 response with a JSON body.
    pub fn json(value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self { status: 200, body, content_type: "application/json".into(), headers: Vec::new() },
            Err(e) => Self::from(Error::internal("serialising a response", e)),
        }
    }

    /// A 200 response with raw bytes of the given content type.
    pub fn bytes(body: Vec<u8>, content_type: String) -> Self {
        Self { status: 200, body, content_type: content_type.into(), headers: Vec::new() }
    }

    /// A 200 response with `{}`.
    pub fn empty_object() -> Self {
        Self::json(&serde_json::json!({}))
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

impl From<Error> for Response {
    fn from(error: Error) -> Self {
        let mut response = Self::json(&error.to_json()).with_status(error.status());
        if let Some(secs) = error.retry_after_secs() {
            response.headers.push(("retry-after", secs.to_string()));
        }
        response
    }
}

const CORS_HEADERS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST, PUT, DELETE, OPTIONS"),
    ("access-control-allow-headers", "X-Requested-With, Content-Type, Authorization"),
];

/// Converts to a hyper response, adding CORS and safety headers.
pub fn into_hyper(response: Response) -> http::Response<Full<Bytes>> {
    let mut builder = http::Response::builder()
        .status(response.status)
        .header("content-type", response.content_type.as_ref())
        .header("x-content-type-options", "nosniff");
    for (name, value) in CORS_HEADERS {
        builder = builder.header(name, value);
    }
    for (name, value) in &response.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder.body(Full::new(Bytes::from(response.body))).unwrap_or_else(|error| {
        tracing::error!(%error, "invalid response header");
        let mut fallback = http::Response::new(Full::new(Bytes::from_static(
            br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
        )));
        *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// The answer to a CORS preflight: headers only, no endpoint logic.
pub fn preflight() -> Response {
    Response { status: 200, body: b"{}".to_vec(), content_type: "application/json".into(), headers: Vec::new() }
}
