//! The request as handlers see it: no hyper types, the body already read
//! within the size and time limits, path parameters decoded, and JSON parsing
//! that yields the spec's errors.
//!
//! Spec: client-server API "API Standards" (JSON bodies, `M_NOT_JSON`,
//! `M_BAD_JSON`) and "Using access tokens".

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Options,
    Other,
}

impl Method {
    pub fn parse(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Other => "OTHER",
        }
    }
}

/// One step of a streamed request body.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The body ended as declared.
    End,
    Failed(Error),
}

/// A request body read as it arrives (media uploads), within the size limit
/// and the idle timeout the HTTP layer enforces. A body that stops without
/// its end (a broken connection) reads as an error, never as a short file.
#[derive(Debug, Clone)]
pub struct BodyStream {
    chunks: std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Chunk>>>,
}

impl BodyStream {
    pub fn new(chunks: tokio::sync::mpsc::Receiver<Chunk>) -> Self {
        Self { chunks: std::sync::Arc::new(tokio::sync::Mutex::new(chunks)) }
    }

    /// A stream over bytes already in memory (tests, fuzzing).
    pub fn from_bytes(body: Bytes) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let _ = sender.try_send(Chunk::Data(body));
        let _ = sender.try_send(Chunk::End);
        Self::new(receiver)
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next_chunk(&self) -> Result<Option<Bytes>> {
        match self.chunks.lock().await.recv().await {
            Some(Chunk::Data(bytes)) => Ok(Some(bytes)),
            Some(Chunk::End) => Ok(None),
            Some(Chunk::Failed(error)) => Err(error),
            None => Err(Error::bad_json("The request body ended early")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// Path parameters by name (see [`super::router`]).
    pub params: super::router::Params,
    pub query: Vec<(String, String)>,
    /// The query string as sent (signed requests between servers sign it).
    pub raw_query: Option<String>,
    /// The `Authorization` header as sent (`X-Matrix` for servers).
    pub authorization: Option<String>,
    pub body: Bytes,
    /// For endpoints that stream their body ([`crate::api::Endpoint::streams_body`]):
    /// the body as it arrives (`body` is then empty).
    pub body_stream: Option<BodyStream>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Range` header, if any (media downloads).
    pub range: Option<String>,
    /// The `Accept-Language` header, if any (the language of mails sent).
    pub accept_language: Option<String>,
    pub client_ip: String,
    /// From `Authorization: Bearer …`, or the `access_token` query parameter
    /// older clients still send.
    pub access_token: Option<String>,
    /// Came through the operators' socket ([`super::operator_socket`]): the
    /// request acts as the server's administrator without a token.
    pub operator: bool,
}

impl Request {
    /// The path parameter `name` (`:name` in the endpoint's paths). Its
    /// absence is an error: the endpoint's paths do not name it.
    pub fn param(&self, name: &str) -> Result<&str> {
        self.optional_param(name)
            .ok_or_else(|| Error::internal("path parameters", format!("this endpoint has no parameter {name:?}")))
    }

    /// A path parameter only some of the endpoint's paths have (a trailing
    /// file name, a backup version).
    pub fn optional_param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Every value of a repeated query parameter, in order.
    pub fn query_all(&self, name: &str) -> Vec<&str> {
        self.query.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
    }

    /// The streamed body of an endpoint that streams its body.
    pub fn body_stream(&self) -> Result<BodyStream> {
        self.body_stream.clone().ok_or_else(|| Error::internal("request body", "this endpoint does not stream"))
    }

    /// The body as a JSON object (an empty body counts as `{}`).
    pub fn json_object(&self) -> Result<Value> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        let value: Value = serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(ErrorKind::NotJson, format!("The request body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::bad_json("The request body must be a JSON object"));
        }
        Ok(value)
    }

    /// The body deserialised as `T`, naming the offending field on failure.
    ///
    /// Parsed straight into `T`, without a JSON tree in between: content that
    /// `T` ignores (unknown fields, however many) costs no memory.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        // Syntax first (allocation-free), so that broken JSON is `M_NOT_JSON`
        // whatever `T` would have made of its beginning.
        serde_json::from_slice::<serde::de::IgnoredAny>(&self.body).or_else(|error| {
            if self.body.iter().all(u8::is_ascii_whitespace) {
                Ok(serde::de::IgnoredAny)
            } else {
                Err(not_json(error))
            }
        })?;
        match self.body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => return from_json_value(Value::Object(Default::default())),
            Some(b'{') => {}
            Some(_) => return Err(Error::bad_json("The request body must be a JSON object")),
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            field_error(&path, e.into_inner())
        })
    }
}

/// Deserialises a JSON value, reporting errors as `M_BAD_JSON` with the path of
/// the field at fault (`auth.type: invalid type …`).
pub fn from_json_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        field_error(&path, e.into_inner())
    })
}

fn field_error(path: &str, error: impl std::fmt::Display) -> Error {
    if path == "." {
        Error::bad_json(format!("Invalid request body: {error}"))
    } else {
        Error::bad_json(format!("Invalid field `{path}`: {error}"))
    }
}

fn not_json(error: serde_json::Error) -> Error {
    Error::new(ErrorKind::NotJson, format!("The request body is not valid JSON: {error}"))
}

/// Decodes `%XX` escapes; `plus_as_space` for query strings. Invalid escapes
/// are kept literally; invalid UTF-8 is replaced.
pub fn percent_decode(input: &str, plus_as_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a
/// path segment or a query value of a request this server sends.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Splits a query string into decoded pairs.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(key, true), percent_decode(value, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn request(body: &str) -> Request {
        Request {
            method: Method::Post,
            path: "/".into(),
            params: vec![],
            query: vec![],
            raw_query: None,
            authorization: None,
            body: Bytes::from(body.to_owned()),
            body_stream: None,
            content_type: None,
            range: None,
            accept_language: None,
            client_ip: "127.0.0.1".into(),
            access_token: None,
            operator: false,
        }
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        nested: Option<Nested>,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    #[test]
    fn json_errors_distinguish_not_json_from_bad_json_and_name_the_field() {
        assert_eq!(request("{nope").json::<Body>().unwrap_err().kind, ErrorKind::NotJson);
        assert_eq!(request("[1]").json::<Body>().unwrap_err().kind, ErrorKind::BadJson);
        let missing = request("{}").json::<Body>().unwrap_err();
        assert!(missing.message.contains("name"), "{}", missing.message);
        let wrong = request(r#"{"name": "x", "nested": {"count": "many"}}"#).json::<Body>().unwrap_err();
        assert_eq!(wrong.kind, ErrorKind::BadJson);
        assert!(wrong.message.contains("nested.count"), "{}", wrong.message);
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        assert!(request("").json_object().unwrap().as_object().unwrap().is_empty());
    }

    #[test]
    fn percent_encoding_round_trips() {
        let id = "@bob:b.example/é ?&";
        assert_eq!(percent_encode(id), "%40bob%3Ab.example%2F%C3%A9%20%3F%26");
        assert_eq!(percent_decode(&percent_encode(id), false), id);
    }

    #[test]
    fn percent_decoding_handles_edge_cases() {
        assert_eq!(percent_decode("a%20b%2Fc", false), "a b/c");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%C3%A9", false), "é");
        assert_eq!(percent_decode("%FF", false), "\u{FFFD}");
        assert_eq!(
            parse_query("a=1&b=%40x&&c"),
            vec![("a".into(), "1".into()), ("b".into(), "@x".into()), ("c".into(), "".into())]
        );
    }
}
