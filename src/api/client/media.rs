//! Content repository endpoints: `POST /_matrix/media/v3/upload`,
//! `POST /_matrix/media/v1/create`, `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`,
//! `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]`,
//! `GET /_matrix/client/v1/media/config`, and the legacy unauthenticated
//! `GET /_matrix/media/v3/download/…` when configured.
//!
//! Spec: client-server API "Content repository". Downloads carry a
//! `Content-Disposition` (inline only for safe types) and a sandboxing
//! `Content-Security-Policy`, so an uploaded HTML or SVG file never runs in
//! a browser. A single byte `Range` is answered with 206 (RFC 9110; video
//! players seek with it). Media of other servers are fetched over federation
//! once and then served from the local cache ([`crate::federation::media`]).

use ruma::{OwnedServerName, ServerName};
use serde_json::json;
use tokio::io::AsyncSeekExt;

use crate::{
    error::{Error, ErrorKind, Result},
    federation::media as remote_media,
    http::{response::FileBody, Request, Response},
    media::{
        byte_range, content_disposition, thumbnail::Method, Download, RangeRequest, StoredContent,
        CONTENT_SECURITY_POLICY,
    },
    media::{thumbnail::ThumbnailRequest, RemoteMediaId},
    services::Services,
    users::Identity,
};

fn mxc(s: &Services, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", s.config.server_name)
}

/// The upload's `Content-Type`, if it says something.
fn content_type(request: &Request) -> Option<String> {
    request.content_type.clone().filter(|t| !t.trim().is_empty())
}

/// Reads the streamed request body into a new stored file.
async fn receive_file(s: &Services, request: &Request) -> Result<StoredContent> {
    let body = request.body_stream()?;
    let mut spool = s.media.spool().await?;
    while let Some(chunk) = body.next_chunk().await? {
        spool.write(&chunk).await?;
    }
    spool.finish().await
}

/// `GET /preview_url?url=…`: the page's OpenGraph data (see [`crate::media::preview`]).
pub async fn preview_url(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    if !s.config.media.url_previews {
        return Err(Error::forbidden("URL previews are turned off on this server"));
    }
    let url =
        request.query("url").ok_or_else(|| Error::new(ErrorKind::MissingParam, "The url parameter is required"))?;
    let preview = s.previews.preview(&s.media, s.config.server_name.as_str(), who.user_id.as_str(), url).await?;
    Ok(Response::json(preview.as_ref()))
}

pub async fn upload(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let filename = request.query("filename").map(str::to_owned);
    let content = receive_file(s, request).await?;
    let media_id = s.media.upload(who.user_id.as_str(), content, content_type(request), filename).await?;
    Ok(Response::json(&json!({ "content_uri": mxc(s, &media_id) })))
}

pub async fn create(s: &Services, who: &Identity) -> Result<Response> {
    let (media_id, expires_at) = s.media.create(who.user_id.as_str()).await?;
    Ok(Response::json(&json!({ "content_uri": mxc(s, &media_id), "unused_expires_at": expires_at })))
}

/// The `{serverName}` parameter must be this server.
fn local_media_id<'r>(s: &Services, request: &'r Request) -> Result<&'r str> {
    if request.param("server_name")? != s.config.server_name.as_str() {
        return Err(Error::forbidden("Media can only be uploaded to this server"));
    }
    request.param("media_id")
}

pub async fn upload_to(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let media_id = local_media_id(s, request)?;
    let filename = request.query("filename").map(str::to_owned);
    // Refused ids are refused before their body is read.
    s.media.check_upload_to(who.user_id.as_str(), media_id)?;
    let content = receive_file(s, request).await?;
    s.media.upload_to(who.user_id.as_str(), media_id, content, content_type(request), filename).await?;
    Ok(Response::empty_object())
}

/// A stored file as a response, with headers that keep browsers from
/// running it; a single byte range when the request asks for one (206).
async fn file_response(mut file: Download, filename: Option<&str>, range: Option<&str>) -> Result<Response> {
    let disposition = content_disposition(&file.content_type, filename);
    let total = file.len;
    let wanted = match range.map_or(RangeRequest::Whole, |header| byte_range(header, total)) {
        RangeRequest::Whole => None,
        RangeRequest::Part(first, last) => Some((first, last)),
        RangeRequest::Unsatisfiable => {
            let error = Error::invalid_param(format!("The range cannot be served from {total} bytes (one range only)"));
            let mut response = Response::from(error).with_status(416);
            response.headers.push(("content-range", format!("bytes */{total}")));
            return Ok(response);
        }
    };
    let mut len = total;
    if let Some((first, last)) = wanted {
        file.file.seek(std::io::SeekFrom::Start(first)).await.map_err(|e| Error::internal("seeking media", e))?;
        len = last - first + 1;
    }
    let mut response = Response::file(FileBody::new(file.file, len), file.content_type);
    if let Some((first, last)) = wanted {
        response.status = 206;
        response.headers.push(("content-range", format!("bytes {first}-{last}/{total}")));
    }
    response.headers.push(("accept-ranges", "bytes".to_owned()));
    response.headers.push(("content-disposition", disposition));
    response.headers.push(("content-security-policy", CONTENT_SECURITY_POLICY.to_owned()));
    response.headers.push(("cross-origin-resource-policy", "cross-origin".to_owned()));
    response.headers.push(("cache-control", "private, max-age=31536000, immutable".to_owned()));
    Ok(response)
}

/// The server of a download's `{serverName}`: `None` for this one.
fn media_server(s: &Services, request: &Request) -> Result<Option<OwnedServerName>> {
    let server = request.param("server_name")?;
    if server == s.config.server_name.as_str() {
        return Ok(None);
    }
    let server = ServerName::parse(server).map_err(|_| Error::not_found("No media: the server name is invalid"))?;
    Ok(Some(server))
}

/// Authenticated download (`/_matrix/client/v1/media/download/…`): local
/// media, or another server's (fetched once, then served from the cache).
pub async fn download(s: &Services, request: &Request) -> Result<Response> {
    let media_id = request.param("media_id")?;
    let file = match media_server(s, request)? {
        None => s.media.download(media_id).await?,
        Some(server) => {
            let id = RemoteMediaId { server: &server, media_id };
            remote_media::download(&s.federation, &s.media, id).await?
        }
    };
    let filename = request
        .optional_param("file_name")
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .or(file.filename.clone());
    file_response(file, filename.as_deref(), request.range.as_deref()).await
}

/// The legacy unauthenticated routes answer only when the operator allows it.
fn legacy_routes_enabled(s: &Services) -> Result<()> {
    if s.config.media.legacy_unauthenticated_downloads {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotFound,
            "Unauthenticated media downloads are disabled; use /_matrix/client/v1/media",
        ))
    }
}

/// Legacy unauthenticated download: only when the operator allows it, and
/// of another server's media only when `allow_remote` is not `false` (older
/// servers fetch this server's media with `allow_remote=false`).
pub async fn legacy_download(s: &Services, request: &Request) -> Result<Response> {
    legacy_routes_enabled(s)?;
    refuse_remote_unless_allowed(s, request)?;
    download(s, request).await
}

/// `allow_remote=false` on a legacy route: only this server's media.
fn refuse_remote_unless_allowed(s: &Services, request: &Request) -> Result<()> {
    if request.query("allow_remote") == Some("false") && media_server(s, request)?.is_some() {
        return Err(Error::not_found("Not a media of this server, and allow_remote is false"));
    }
    Ok(())
}

/// The thumbnail a request asks for: `width`, `height` (required, positive),
/// `method` (`scale` by default, or `crop`), `animated`.
pub fn thumbnail_request(request: &Request) -> Result<ThumbnailRequest> {
    let dimension = |name: &str| -> Result<u32> {
        let value =
            request.query(name).ok_or_else(|| Error::new(ErrorKind::MissingParam, format!("`{name}` is required")))?;
        value
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| Error::invalid_param(format!("`{name}` must be a positive integer")))
    };
    let (width, height) = (dimension("width")?, dimension("height")?);
    let method = match request.query("method") {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(other) => return Err(Error::invalid_param(format!("Unknown thumbnail method {other:?}"))),
    };
    let animated = request.query("animated") == Some("true");
    Ok(ThumbnailRequest { width, height, method, animated })
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}?width=&height=&method=&animated=`.
pub async fn thumbnail(s: &Services, request: &Request) -> Result<Response> {
    let wanted = thumbnail_request(request)?;
    let file = match media_server(s, request)? {
        None => {
            let media_id = request.param("media_id")?;
            s.media.thumbnail(media_id, wanted.width, wanted.height, wanted.method, wanted.animated).await?
        }
        Some(server) => {
            let id = RemoteMediaId { server: &server, media_id: request.param("media_id")? };
            remote_media::thumbnail(&s.federation, &s.media, id, wanted).await?
        }
    };
    file_response(file, None, request.range.as_deref()).await
}

/// Legacy unauthenticated thumbnails: only when the operator allows it.
pub async fn legacy_thumbnail(s: &Services, request: &Request) -> Result<Response> {
    legacy_routes_enabled(s)?;
    refuse_remote_unless_allowed(s, request)?;
    thumbnail(s, request).await
}

pub fn config(s: &Services) -> Response {
    Response::json(&json!({ "m.upload.size": s.media.max_upload_size() }))
}
