//! URL previews: the OpenGraph data of a web page a user is about to send
//! (title, description, image), fetched by the server so that the user's
//! device does not contact the site itself.
//!
//! Spec: client-server API "Content repository", `GET /preview_url`
//! (`data/api/client-server/authed-content-repo.yaml`): `og:*` keys, with
//! `og:image` an `mxc://` URI of a copy in this server's media repository and
//! `matrix:image:size` its size.
//!
//! Bounded as a user-supplied URL must be: fetched through [`HttpClient`]
//! (private and loopback addresses refused unless configured, a deadline per
//! request), at most [`MAX_REDIRECTS`] redirections each checked again, a
//! page read up to [`MAX_PAGE_BYTES`], an image up to [`MAX_IMAGE_BYTES`].
//! Previews are cached for an hour per URL (a bounded cache), so a room
//! pasting the same link fetches it once.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Map, Value};

use super::Media;
use crate::{
    cache::BoundedCache,
    error::{Error, ErrorKind, Result},
    http::client::{ClientError, ClientPolicy, HttpClient},
    util::now_ms,
};

/// Redirections followed at most.
const MAX_REDIRECTS: usize = 5;
/// Bytes of a page read (OpenGraph tags are in the head).
const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Largest image copied into the media repository.
const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// How long a preview is served from the cache.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Previews kept per cache generation.
const CACHE_ENTRIES: usize = 1024;
/// Longest URL accepted.
const MAX_URL_BYTES: usize = 2048;

pub struct Previewer {
    client: HttpClient,
    /// Preview by URL, with the time it was made (ms).
    cache: BoundedCache<String, (u64, Arc<Value>)>,
}

/// What was fetched: the final URL, its content type and body.
struct Fetched {
    url: String,
    content_type: String,
    body: bytes::Bytes,
}

impl Previewer {
    pub fn new(allow_private_addresses: bool) -> Self {
        let policy = ClientPolicy { allow_private_addresses, ..ClientPolicy::default() };
        Self { client: HttpClient::new(policy), cache: BoundedCache::new(CACHE_ENTRIES) }
    }

    /// The preview of `url`, from the cache or fetched now; images are copied
    /// into `media` as uploaded by `user` (`mxc://{server_name}/…`).
    pub async fn preview(&self, media: &Media, server_name: &str, user: &str, url: &str) -> Result<Arc<Value>> {
        check_url(url)?;
        let now = now_ms();
        if let Some((made, preview)) = self.cache.get(url) {
            if now.saturating_sub(made) < CACHE_TTL.as_millis() as u64 {
                return Ok(preview);
            }
        }
        let epoch = self.cache.epoch();
        let page = self.fetch(url, MAX_PAGE_BYTES).await?;
        let mut preview = if page.content_type.starts_with("image/") {
            Map::new()
        } else if page.content_type.starts_with("text/html") || page.content_type.starts_with("application/xhtml") {
            open_graph(&String::from_utf8_lossy(&page.body))
        } else {
            return Err(Error::not_found(format!("{url} is not a web page or an image")));
        };
        let image = if page.content_type.starts_with("image/") {
            Some(page)
        } else {
            match preview.remove("og:image").and_then(|v| v.as_str().map(str::to_owned)) {
                Some(image_url) => match resolve(&page.url, &image_url) {
                    Some(image_url) => self.fetch(&image_url, MAX_IMAGE_BYTES).await.ok(),
                    None => None,
                },
                None => None,
            }
        };
        if let Some(image) = image.filter(|image| image.content_type.starts_with("image/")) {
            let size = image.body.len();
            let media_id = store_image(media, user, &image).await?;
            preview.insert("og:image".into(), json!(format!("mxc://{server_name}/{media_id}")));
            preview.insert("og:image:type".into(), json!(image.content_type));
            preview.insert("matrix:image:size".into(), json!(size));
        }
        let preview = Arc::new(Value::Object(preview));
        self.cache.insert_if_current(url.to_owned(), (now, Arc::clone(&preview)), epoch);
        Ok(preview)
    }

    /// GET with redirections followed (each checked like the first URL).
    async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Fetched> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.client.get(&url, max_bytes).await.map_err(|e| fetch_failed(&url, e))?;
            if (300..400).contains(&response.status) {
                let location = response.location.ok_or_else(|| Error::not_found(format!("{url} redirects nowhere")))?;
                url = resolve(&url, &location).ok_or_else(|| Error::not_found(format!("{url} redirects badly")))?;
                continue;
            }
            if response.status != 200 {
                return Err(Error::not_found(format!("{url} answered {}", response.status)));
            }
            let content_type = response.content_type.unwrap_or_default().to_ascii_lowercase();
            return Ok(Fetched { url, content_type, body: response.body });
        }
        Err(Error::not_found(format!("{url}: too many redirections")))
    }
}

fn check_url(url: &str) -> Result<()> {
    if url.len() > MAX_URL_BYTES {
        return Err(Error::invalid_param(format!("The URL is longer than {MAX_URL_BYTES} bytes")));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid_param("Only http and https URLs can be previewed"));
    }
    Ok(())
}

/// The error a client gets when the page could not be fetched (Synapse
/// answers these with 404 or 502 alike; clients just show no preview).
fn fetch_failed(url: &str, error: ClientError) -> Error {
    match error {
        ClientError::InvalidUrl(reason) => Error::invalid_param(format!("Invalid URL: {reason}")),
        ClientError::DeniedAddress(host) => {
            Error::new(ErrorKind::Forbidden, format!("{host} is on a network this server does not preview"))
        }
        other => {
            tracing::debug!(%url, error = %other, "URL preview fetch failed");
            Error::not_found(format!("Could not fetch {url}: {other}"))
        }
    }
}

async fn store_image(media: &Media, user: &str, image: &Fetched) -> Result<String> {
    let mut spool = media.spool().await?;
    spool.write(&image.body).await?;
    let content = spool.finish().await?;
    let filename = image.url.rsplit('/').next().filter(|name| !name.is_empty()).map(str::to_owned);
    media.upload(user, content, Some(image.content_type.clone()), filename).await
}

/// `reference` resolved against `base` (absolute, scheme-relative,
/// absolute-path and relative references); `None` for other schemes.
pub(crate) fn resolve(base: &str, reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return Some(reference.to_owned());
    }
    let (scheme, rest) = base.split_once("://")?;
    if let Some(rest) = reference.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if reference.contains(':') && !reference.starts_with('/') {
        return None; // javascript:, data:, …
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..authority_end]);
    if reference.starts_with('/') {
        return Some(format!("{origin}{reference}"));
    }
    let path = &rest[authority_end..];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let directory = path.rfind('/').map_or("/", |end| &path[..=end]);
    Some(format!("{origin}{directory}{reference}"))
}

/// The OpenGraph properties of a page (`<meta property="og:…" content="…">`),
/// with the `<title>` and `<meta name="description">` as fallbacks.
pub(crate) fn open_graph(html: &str) -> Map<String, Value> {
    let mut properties = Map::new();
    let mut title = None;
    let mut description = None;
    let lower = html.to_ascii_lowercase();
    let mut position = 0;
    while let Some(start) = lower[position..].find('<').map(|i| position + i) {
        let Some(end) = lower[start..].find('>').map(|i| start + i) else { break };
        let tag = &html[start + 1..end];
        let tag_lower = &lower[start + 1..end];
        if tag_lower.starts_with("meta") {
            let attributes = attributes(tag);
            let name = attributes.iter().find(|(k, _)| k == "property" || k == "name").map(|(_, v)| v.clone());
            let content = attributes.iter().find(|(k, _)| k == "content").map(|(_, v)| v.clone());
            if let (Some(name), Some(content)) = (name, content) {
                let name = name.to_ascii_lowercase();
                if name.starts_with("og:") && !properties.contains_key(&name) {
                    properties.insert(name, Value::String(content));
                } else if name == "description" {
                    description.get_or_insert(content);
                }
            }
        } else if tag_lower.starts_with("title") && title.is_none() {
            if let Some(close) = lower[end..].find("</title").map(|i| end + i) {
                title = Some(decode_entities(html[end + 1..close].trim()));
            }
        } else if tag_lower.starts_with("/head") || tag_lower.starts_with("body") {
            break;
        }
        position = end + 1;
    }
    if let Some(title) = title.filter(|t| !t.is_empty()) {
        properties.entry("og:title").or_insert(Value::String(title));
    }
    if let Some(description) = description {
        properties.entry("og:description").or_insert(Value::String(description));
    }
    properties
}

/// `name="value"` (or single-quoted, or bare) attributes of a tag, names
/// lowercased, values with entities decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let bytes = tag.as_bytes();
    let mut i = tag.find(char::is_whitespace).unwrap_or(tag.len());
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' {
            i += 1;
        }
        let name = tag[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match bytes.get(i) {
            Some(&quote @ (b'"' | b'\'')) => {
                let start = i + 1;
                let end = tag[start..].find(quote as char).map_or(tag.len(), |e| start + e);
                i = end + 1;
                &tag[start..end]
            }
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                &tag[start..i]
            }
        };
        if !name.is_empty() {
            found.push((name, decode_entities(value)));
        }
    }
    found
}

/// The common HTML character references: named `amp lt gt quot apos nbsp`
/// and numeric ones.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semicolon) = rest.find(';').filter(|&end| end <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semicolon];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semicolon + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_graph_tags_with_title_and_description_fallbacks() {
        let page = r#"<!doctype html><html><head><TITLE> Fallback &amp; title </TITLE>
            <meta property="og:title" content="Le portail de l&#39;État">
            <meta name=description content='Services publics'>
            <meta property="og:image" content="/logo.png"/><meta property="og:title" content="second">
            </head><body><meta property="og:type" content="ignored"></body></html>"#;
        let og = open_graph(page);
        assert_eq!(og["og:title"], "Le portail de l'État");
        assert_eq!(og["og:description"], "Services publics");
        assert_eq!(og["og:image"], "/logo.png");
        assert!(og.get("og:type").is_none(), "only the head is read");
        let bare = open_graph("<html><head><title>Only a title</title></head></html>");
        assert_eq!(Value::Object(bare), json!({ "og:title": "Only a title" }));
    }

    #[test]
    fn references_resolve_against_the_page() {
        let base = "https://www.example.gouv.fr/a/b/page.html?x=1";
        assert_eq!(resolve(base, "/logo.png").unwrap(), "https://www.example.gouv.fr/logo.png");
        assert_eq!(resolve(base, "img/l.png").unwrap(), "https://www.example.gouv.fr/a/b/img/l.png");
        assert_eq!(resolve(base, "//cdn.example.fr/l.png").unwrap(), "https://cdn.example.fr/l.png");
        assert_eq!(resolve(base, "http://other.fr/x").unwrap(), "http://other.fr/x");
        assert_eq!(resolve(base, "javascript:alert(1)"), None);
        assert_eq!(resolve("https://example.org", "l.png").unwrap(), "https://example.org/l.png");
    }

    #[test]
    fn entities_decode_and_broken_ones_stay() {
        assert_eq!(decode_entities("a &lt;b&gt; &#x263A; &#9731; &bogus; & done"), "a <b> ☺ ☃ &bogus; & done");
    }
}
