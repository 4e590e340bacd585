//! Responses as handlers build them, and their conversion to HTTP: JSON
//! content type, CORS headers on every response, errors as Matrix JSON.
//!
//! Spec: client-server API "Web Browser Clients" (CORS), "Standard error
//! response", "Rate limiting" (`Retry-After`).

use bytes::Bytes;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};

use crate::error::Error;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// A file sent as the body instead of `body`, read as it is sent.
    pub file: Option<FileBody>,
    pub content_type: std::borrow::Cow<'static, str>,
    pub headers: Vec<(&'static str, String)>,
}

/// An open file and how many bytes of it to send.
#[derive(Debug)]
pub struct FileBody {
    pub file: tokio::fs::File,
    pub len: u64,
    /// Bytes sent before the file (a multipart framing's headers).
    pub before: Vec<u8>,
    /// Bytes sent after the file (a multipart framing's closing delimiter).
    pub after: Vec<u8>,
}

impl FileBody {
    /// `len` bytes of `file`, nothing around them.
    pub fn new(file: tokio::fs::File, len: u64) -> Self {
        Self { file, len, before: Vec::new(), after: Vec::new() }
    }
}

impl Response {
    /// A 200 response streaming `file`.
    pub fn file(file: FileBody, content_type: String) -> Self {
        Self { status: 200, body: Vec::new(), file: Some(file), content_type: content_type.into(), headers: Vec::new() }
    }

    /// A 200 response with a JSON body.
    pub fn json(value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                Self { status: 200, body, file: None, content_type: "application/json".into(), headers: Vec::new() }
            }
            Err(e) => Self::from(Error::internal("serialising a response", e)),
        }
    }

    /// A 200 response with raw bytes of the given content type.
    pub fn bytes(body: Vec<u8>, content_type: String) -> Self {
        Self { status: 200, body, file: None, content_type: content_type.into(), headers: Vec::new() }
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

/// What hyper sends: bytes in memory, or a file read as it goes.
pub type HyperBody = Either<Full<Bytes>, FileStream>;

/// Converts to a hyper response, adding CORS and safety headers.
pub fn into_hyper(response: Response) -> http::Response<HyperBody> {
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
    let body = match response.file {
        Some(file) => Either::Right(FileStream::new(file)),
        None => Either::Left(Full::new(Bytes::from(response.body))),
    };
    builder.body(body).unwrap_or_else(|error| {
        tracing::error!(%error, "invalid response header");
        let mut fallback = http::Response::new(Either::Left(Full::new(Bytes::from_static(
            br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
        ))));
        *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// The answer to a CORS preflight: headers only, no endpoint logic.
pub fn preflight() -> Response {
    Response {
        status: 200,
        body: b"{}".to_vec(),
        file: None,
        content_type: "application/json".into(),
        headers: Vec::new(),
    }
}

/// Bytes read from a file per body frame.
const FILE_CHUNK: usize = 256 * 1024;

/// A file as a response body: read a chunk at a time, never whole in memory;
/// exactly `len` bytes (a file that turns out shorter ends the response with
/// an error, so the client sees a broken transfer rather than a short file),
/// between the body's `before` and `after` bytes.
pub struct FileStream {
    file: tokio::fs::File,
    remaining: u64,
    buffer: Vec<u8>,
    before: Option<Bytes>,
    after: Option<Bytes>,
}

impl FileStream {
    fn new(body: FileBody) -> Self {
        let nonempty = |bytes: Vec<u8>| (!bytes.is_empty()).then(|| Bytes::from(bytes));
        Self {
            file: body.file,
            remaining: body.len,
            buffer: Vec::new(),
            before: nonempty(body.before),
            after: nonempty(body.after),
        }
    }
}

impl Body for FileStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(before) = this.before.take() {
            return Poll::Ready(Some(Ok(Frame::data(before))));
        }
        if this.remaining == 0 {
            return Poll::Ready(this.after.take().map(|after| Ok(Frame::data(after))));
        }
        let want = usize::try_from(this.remaining).unwrap_or(usize::MAX).min(FILE_CHUNK);
        this.buffer.resize(want, 0);
        let mut read = ReadBuf::new(&mut this.buffer);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(error)) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Ok(())) => {
                let filled = read.filled().len();
                if filled == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than its recorded size",
                    ))));
                }
                this.remaining -= filled as u64;
                let mut chunk = std::mem::take(&mut this.buffer);
                chunk.truncate(filled);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.before.is_none() && self.after.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let framing = |bytes: &Option<Bytes>| bytes.as_ref().map_or(0, |b| b.len() as u64);
        SizeHint::with_exact(self.remaining + framing(&self.before) + framing(&self.after))
    }
}
