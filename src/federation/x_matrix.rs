//! Request authentication between servers: the `Authorization: X-Matrix`
//! header (server-server API "Request Authentication").
//!
//! The origin signs, with one of its server keys, the canonical JSON of
//! `{method, uri, origin, destination, content?}` — `uri` is the path and
//! query exactly as sent, `content` the JSON body if there is one. The header
//! carries `origin`, `destination`, `key` (the key id) and `sig` (unpadded
//! base64), each as `name=value` or `name="value"` (with `\` escapes),
//! separated by commas.

use serde_json::{json, Map, Value};

use crate::crypto::{json_signatures, signing_key::ServerKey};

/// A parsed `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    /// Required by the spec since v1.3; older servers may leave it out.
    pub destination: Option<String>,
    pub key_id: String,
    pub signature: String,
}

/// Why a header or its signature is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XMatrixError {
    /// Not an `X-Matrix` header, or a parameter missing or malformed.
    Malformed(String),
    /// The signature does not verify with the key.
    BadSignature(String),
    /// Signed for another server.
    WrongDestination(String),
}

impl std::fmt::Display for XMatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(reason) => write!(f, "malformed X-Matrix authorization: {reason}"),
            Self::BadSignature(reason) => write!(f, "X-Matrix signature refused: {reason}"),
            Self::WrongDestination(destination) => write!(f, "the request was signed for {destination}"),
        }
    }
}

/// Longest header accepted (a few hundred bytes in practice).
const MAX_HEADER_BYTES: usize = 4096;

/// Parses an `Authorization` header value.
pub fn parse(header: &str) -> Result<XMatrix, XMatrixError> {
    let malformed = |reason: &str| XMatrixError::Malformed(reason.to_owned());
    if header.len() > MAX_HEADER_BYTES {
        return Err(malformed("header too long"));
    }
    let (scheme, rest) = header.trim().split_once(char::is_whitespace).ok_or_else(|| malformed("no parameters"))?;
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return Err(malformed("not the X-Matrix scheme"));
    }
    let (mut origin, mut destination, mut key_id, mut signature) = (None, None, None, None);
    for (name, value) in parameters(rest).map_err(|reason| malformed(&reason))? {
        let slot = match name.to_ascii_lowercase().as_str() {
            "origin" => &mut origin,
            "destination" => &mut destination,
            "key" => &mut key_id,
            "sig" => &mut signature,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(malformed(&format!("{name} is given twice")));
        }
    }
    let origin = origin.filter(|o| !o.is_empty()).ok_or_else(|| malformed("no origin"))?;
    let key_id = key_id.filter(|k| k.starts_with("ed25519:")).ok_or_else(|| malformed("no ed25519 key"))?;
    let signature = signature.filter(|s| !s.is_empty()).ok_or_else(|| malformed("no sig"))?;
    Ok(XMatrix { origin, destination, key_id, signature })
}

/// The comma-separated `name=value` pairs; values are tokens or quoted
/// strings with `\` escapes.
fn parameters(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            name.push(c);
        }
        if chars.next() != Some('=') {
            return Err(format!("{:?} has no value", name.trim()));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    None => return Err("an unterminated quoted value".into()),
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or("an escape at the end")?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim().to_owned();
        }
        pairs.push((name.trim().to_owned(), value));
    }
}

/// The object a request's signature covers.
pub fn signed_object(method: &str, uri: &str, origin: &str, destination: &str, content: Option<&Value>) -> Value {
    let mut object = json!({ "method": method, "uri": uri, "origin": origin, "destination": destination });
    if let Some(content) = content {
        object["content"] = content.clone();
    }
    object
}

/// The `Authorization` header value of a request from `origin` to
/// `destination`, signed with `key`.
pub fn authorization(
    key: &ServerKey,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
) -> Result<String, String> {
    let mut object = signed_object(method, uri, origin, destination, content);
    key.sign_json(origin, &mut object).map_err(|e| e.to_string())?;
    let signature = object["signatures"][origin][key.key_id()].as_str().ok_or("no signature made")?.to_owned();
    Ok(format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{signature}\"",
        quote_escape(origin),
        quote_escape(destination),
        key.key_id()
    ))
}

fn quote_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Checks a parsed header against the request and the origin's public key
/// (`public_key`, unpadded base64, for `header.key_id`), for a request
/// received by `us`.
pub fn verify(
    header: &XMatrix,
    us: &str,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    public_key: &str,
) -> Result<(), XMatrixError> {
    if let Some(destination) = &header.destination {
        if destination != us {
            return Err(XMatrixError::WrongDestination(destination.clone()));
        }
    }
    let mut object = signed_object(method, uri, &header.origin, us, content);
    if let Some(map) = object.as_object_mut() {
        let mut by_key = Map::new();
        by_key.insert(header.key_id.clone(), Value::String(header.signature.clone()));
        let mut signatures = Map::new();
        signatures.insert(header.origin.clone(), Value::Object(by_key));
        map.insert("signatures".into(), Value::Object(signatures));
    }
    let object = object.as_object().cloned().unwrap_or_default();
    json_signatures::verify(&object, &header.origin, &header.key_id, public_key).map_err(XMatrixError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_with_quotes_escapes_and_unknown_parameters() {
        let header =
            r#"X-Matrix origin="origin.hs.example.com",destination="dest.example",key="ed25519:key1",sig="ABC\"def""#;
        let parsed = parse(header).unwrap();
        assert_eq!(parsed.origin, "origin.hs.example.com");
        assert_eq!(parsed.destination.as_deref(), Some("dest.example"));
        assert_eq!(parsed.key_id, "ed25519:key1");
        assert_eq!(parsed.signature, "ABC\"def");
        // Unquoted values, spaces after commas, other parameters, older servers without destination.
        let parsed = parse("x-matrix origin=old.example, key=ed25519:a, sig=Zm9v, extra=1").unwrap();
        assert_eq!(
            (parsed.origin.as_str(), parsed.destination, parsed.signature.as_str()),
            ("old.example", None, "Zm9v")
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "Bearer abc",
            "X-Matrix",
            "X-Matrix origin=a.example,key=ed25519:a",
            "X-Matrix origin=a.example,key=rsa:a,sig=x",
            "X-Matrix origin=\"a.example,key=ed25519:a,sig=x",
            "X-Matrix origin=a,origin=b,key=ed25519:a,sig=x",
            "X-Matrix origin",
        ] {
            assert!(matches!(parse(bad), Err(XMatrixError::Malformed(_))), "{bad:?}");
        }
        assert!(parse(&format!("X-Matrix origin={}", "a".repeat(5000))).is_err());
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let key = crate::crypto::signing_key::tests::spec_test_key();
        let body = json!({ "pdus": [] });
        let header =
            authorization(&key, "a.example", "b.example", "PUT", "/_matrix/federation/v1/send/1", Some(&body)).unwrap();
        let parsed = parse(&header).unwrap();
        let public = key.public_key_base64();
        let uri = "/_matrix/federation/v1/send/1";
        assert_eq!(verify(&parsed, "b.example", "PUT", uri, Some(&body), &public), Ok(()));
        assert!(matches!(
            verify(&parsed, "c.example", "PUT", uri, Some(&body), &public),
            Err(XMatrixError::WrongDestination(_))
        ));
        let tampered = json!({ "pdus": [1] });
        for (method, uri, content) in [
            ("POST", uri, Some(&body)),
            ("PUT", "/_matrix/federation/v1/send/2", Some(&body)),
            ("PUT", uri, Some(&tampered)),
            ("PUT", uri, None),
        ] {
            assert!(matches!(
                verify(&parsed, "b.example", method, uri, content, &public),
                Err(XMatrixError::BadSignature(_))
            ));
        }
    }
}
