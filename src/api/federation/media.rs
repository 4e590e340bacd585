//! Federation media: `GET /_matrix/federation/v1/media/download/{mediaId}`
//! and `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`.
//!
//! Spec: server-server API "Content Repository". Any server that
//! authenticates may fetch this server's media (as over the client API, the
//! media id is the capability). The answer is `multipart/mixed`: an empty
//! JSON metadata part, then the file with its `Content-Type` and
//! `Content-Disposition`, streamed from disk.

use crate::{
    api::client::media::thumbnail_request,
    error::Result,
    http::{response::FileBody, Request, Response},
    media::{content_disposition, multipart::framing, Download},
    services::Services,
};

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub async fn download(s: &Services, request: &Request) -> Result<Response> {
    let file = s.media.download(request.param("media_id")?).await?;
    Ok(multipart_answer(file))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=&animated=`.
pub async fn thumbnail(s: &Services, request: &Request) -> Result<Response> {
    let wanted = thumbnail_request(request)?;
    let media_id = request.param("media_id")?;
    let file = s.media.thumbnail(media_id, wanted.width, wanted.height, wanted.method, wanted.animated).await?;
    Ok(multipart_answer(file))
}

/// The file as the second part of a multipart answer.
fn multipart_answer(file: Download) -> Response {
    let disposition = content_disposition(&file.content_type, file.filename.as_deref());
    let framing = framing(&file.content_type, &disposition);
    let body = FileBody { file: file.file, len: file.len, before: framing.before, after: framing.after };
    Response::file(body, framing.content_type)
}
