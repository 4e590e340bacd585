//! Media of other servers: fetched for this server's clients, once, then
//! served from the local cache.
//!
//! Spec: server-server API "Content Repository" (`GET
//! /_matrix/federation/v1/media/download/{mediaId}` and `/thumbnail`,
//! `multipart/mixed` answers whose second part is the file or a `Location`
//! to fetch it from), and client-server API "Content repository" for the
//! legacy `GET /_matrix/media/v3/download/{serverName}/{mediaId}` older
//! servers still answer (used when the federation endpoint is unknown to
//! the peer, as Synapse does).
//!
//! A remote file is streamed into a spool (bounded by
//! `media.max_upload_size`, never whole in memory) and recorded in the
//! media cache; the whole transfer is bounded in time. A redirection's URL
//! is not cached (the spec: it may expire); the file it leads to is.

use std::time::Duration;

use ruma::ServerName;

use super::{Federation, FederationError};
use crate::{
    error::{Error, ErrorKind, Result},
    http::client::{ClientError, ServerRequest, StreamedResponse},
    media::{
        multipart::{boundary_of, disposition_filename, header, Event, MultipartReader},
        thumbnail::ThumbnailRequest,
        Download, FetchedMedia, Media, RemoteMediaId,
    },
};

/// The longest fetching one remote file may take.
const FETCH_TIME: Duration = Duration::from_secs(120);
/// The largest metadata part (the spec: an empty object today).
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The largest error answer read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Another server's media item: from the cache, or fetched and cached.
pub async fn download(federation: &Federation, media: &Media, id: RemoteMediaId<'_>) -> Result<Download> {
    if !id.is_valid() {
        return Err(Error::not_found("Unknown media"));
    }
    if let Some(cached) = media.cached_remote(id).await? {
        return Ok(cached);
    }
    let fetched = federation.fetch_media(media, id, None).await?;
    tracing::debug!(server = %id.server, media_id = id.media_id, size = fetched.content.size, "remote media cached");
    media.record_remote(id, fetched).await
}

/// A thumbnail of another server's media item, made by that server: from
/// the cache, or fetched and cached.
pub async fn thumbnail(
    federation: &Federation,
    media: &Media,
    id: RemoteMediaId<'_>,
    wanted: ThumbnailRequest,
) -> Result<Download> {
    if !id.is_valid() {
        return Err(Error::not_found("Unknown media"));
    }
    let label = wanted.cache_label();
    if let Some(cached) = media.cached_remote_thumbnail(id, &label).await? {
        return Ok(cached);
    }
    let fetched = federation.fetch_media(media, id, Some(wanted)).await?;
    media.record_remote_thumbnail(id, &label, fetched).await
}

impl Federation {
    /// Fetches a media item (or a thumbnail of it) from its server into a spool.
    async fn fetch_media(
        &self,
        media: &Media,
        id: RemoteMediaId<'_>,
        thumbnail: Option<ThumbnailRequest>,
    ) -> Result<FetchedMedia> {
        let path = match thumbnail {
            None => format!("/_matrix/federation/v1/media/download/{}", id.media_id),
            Some(wanted) => format!("/_matrix/federation/v1/media/thumbnail/{}?{}", id.media_id, wanted.query()),
        };
        let response = self.request_streamed(id.server, &path, true).await.map_err(gateway_error)?;
        if response.status == 200 {
            let boundary = response.headers.content_type.as_deref().and_then(boundary_of).ok_or_else(|| {
                bad_answer(id.server, "a media answer that is not multipart/mixed with a boundary".to_owned())
            })?;
            return self.read_multipart(media, id.server, response, &boundary).await;
        }
        let refusal = refusal(response).await;
        if !is_unknown_endpoint(&refusal) {
            return Err(refusal_error(refusal));
        }
        tracing::debug!(server = %id.server, "no federation media endpoint: the legacy download instead");
        let legacy = match thumbnail {
            None => format!("/_matrix/media/v3/download/{}/{}?allow_remote=false", id.server, id.media_id),
            Some(wanted) => format!(
                "/_matrix/media/v3/thumbnail/{}/{}?allow_remote=false&{}",
                id.server,
                id.media_id,
                wanted.query()
            ),
        };
        let response = self.request_streamed(id.server, &legacy, false).await.map_err(gateway_error)?;
        self.read_plain(media, id.server, response).await
    }

    /// A `GET` to another server whose answer is read as it arrives.
    async fn request_streamed(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        signed: bool,
    ) -> Result<StreamedResponse, FederationError> {
        self.check_federates_with(destination.as_str())?;
        let authorization = if signed {
            let header = super::x_matrix::authorization(
                &self.key,
                self.server_name.as_str(),
                destination.as_str(),
                "GET",
                path_and_query,
                None,
            )
            .map_err(FederationError::BadAnswer)?;
            Some(header)
        } else {
            None
        };
        let resolved = self.resolver.resolve(&self.client, destination).await;
        let url = resolved.url(path_and_query);
        let request = ServerRequest {
            method: "GET",
            url: &url,
            connect_to: resolved.connect_to.as_deref(),
            authorization,
            json_body: None,
            max_response: 0,
        };
        self.client.server_request_streamed(request, FETCH_TIME).await.map_err(super::unreachable)
    }

    /// The second part of a federation media answer, into a spool (or the
    /// file its `Location` names).
    async fn read_multipart(
        &self,
        media: &Media,
        server: &ServerName,
        mut response: StreamedResponse,
        boundary: &str,
    ) -> Result<FetchedMedia> {
        let mut reader = MultipartReader::new(boundary);
        let mut part = 0;
        let mut metadata_bytes = 0;
        let mut file: Option<(crate::media::Spool, Vec<(String, String)>)> = None;
        loop {
            while let Some(event) = reader.next_event().map_err(|error| bad_answer(server, error.to_string()))? {
                match event {
                    Event::Headers(headers) => {
                        part += 1;
                        if part == 2 {
                            if let Some(location) = header(&headers, "location") {
                                let location = location.to_owned();
                                return self.follow_location(media, server, &location).await;
                            }
                            file = Some((media.spool().await?, headers));
                        }
                    }
                    Event::Data(data) if part == 1 => {
                        metadata_bytes += data.len();
                        if metadata_bytes > MAX_METADATA_BYTES {
                            return Err(bad_answer(server, "a media metadata part too large".to_owned()));
                        }
                    }
                    Event::Data(data) => {
                        if let Some((spool, _)) = file.as_mut() {
                            spool.write(&data).await.map_err(too_large_as_502)?;
                        }
                    }
                    Event::PartEnd if part == 2 => {
                        let Some((spool, headers)) = file.take() else { break };
                        let content = spool.finish().await?;
                        return Ok(FetchedMedia {
                            content,
                            content_type: header(&headers, "content-type").map(str::to_owned),
                            filename: header(&headers, "content-disposition").and_then(disposition_filename),
                        });
                    }
                    Event::PartEnd | Event::End => {}
                }
            }
            match response.next_chunk().await.map_err(|error| fetch_failed(server, error))? {
                Some(chunk) => reader.feed(&chunk),
                None => {
                    reader.finish().map_err(|error| bad_answer(server, error.to_string()))?;
                    return Err(bad_answer(server, "a media answer without its second part".to_owned()));
                }
            }
        }
    }

    /// The file a multipart answer's `Location` names (not signed: it may
    /// be anywhere, under the same address rules as every outgoing request).
    async fn follow_location(&self, media: &Media, server: &ServerName, location: &str) -> Result<FetchedMedia> {
        let response =
            self.client.get_streamed(location, FETCH_TIME).await.map_err(|error| fetch_failed(server, error))?;
        self.read_plain(media, server, response).await
    }

    /// A plain answer whose body is the file.
    async fn read_plain(
        &self,
        media: &Media,
        server: &ServerName,
        mut response: StreamedResponse,
    ) -> Result<FetchedMedia> {
        if response.status != 200 {
            return Err(refusal_error(refusal(response).await));
        }
        let mut spool = media.spool().await?;
        while let Some(chunk) = response.next_chunk().await.map_err(|error| fetch_failed(server, error))? {
            spool.write(&chunk).await.map_err(too_large_as_502)?;
        }
        let headers = response.headers;
        Ok(FetchedMedia {
            content: spool.finish().await?,
            content_type: headers.content_type,
            filename: headers.content_disposition.as_deref().and_then(disposition_filename),
        })
    }
}

/// An error answer's status and JSON body.
async fn refusal(response: StreamedResponse) -> FederationError {
    let status = response.status;
    let body = response.read_to_end(MAX_ERROR_BYTES).await.unwrap_or_default();
    FederationError::Refused { status, body: serde_json::from_slice(&body).unwrap_or_default() }
}

/// Whether the peer does not know the federation media endpoints (an older
/// server): `M_UNRECOGNIZED`, or a method or route it does not have.
fn is_unknown_endpoint(refusal: &FederationError) -> bool {
    match refusal {
        FederationError::Refused { status, body } => body["errcode"] == "M_UNRECOGNIZED" || matches!(status, 405 | 501),
        _ => false,
    }
}

/// A refusal as the client sees it: the peer's own media errors kept.
fn refusal_error(refusal: FederationError) -> Error {
    if let FederationError::Refused { body, .. } = &refusal {
        let message = |default: &str| body["error"].as_str().unwrap_or(default).to_owned();
        match body["errcode"].as_str() {
            Some("M_NOT_YET_UPLOADED") => {
                return Error::new(ErrorKind::NotYetUploaded, message("The media has not been uploaded yet"))
            }
            Some("M_TOO_LARGE") => return Error::new(ErrorKind::RemoteTooLarge, message("The media is too large")),
            _ => {}
        }
    }
    gateway_error(refusal)
}

/// A failure of the other server: 502, as Synapse (not this server's 503).
fn gateway_error(error: FederationError) -> Error {
    match error {
        FederationError::Unreachable(_) | FederationError::BadAnswer(_) | FederationError::Keys(_) => {
            Error::new(ErrorKind::BadGateway, format!("The media could not be fetched: {error}"))
        }
        FederationError::Refused { status, .. } if status >= 500 => {
            Error::new(ErrorKind::BadGateway, format!("The media could not be fetched: {error}"))
        }
        other => other.into(),
    }
}

/// A remote file past this server's size limit: 502 (the client-server
/// spec's status for media too large to serve), not the upload's 413.
fn too_large_as_502(error: Error) -> Error {
    if error.kind == ErrorKind::TooLarge {
        Error::new(ErrorKind::RemoteTooLarge, error.message)
    } else {
        error
    }
}

fn bad_answer(server: &ServerName, reason: String) -> Error {
    tracing::debug!(%server, %reason, "bad media answer");
    gateway_error(FederationError::BadAnswer(format!("{server} sent {reason}")))
}

fn fetch_failed(server: &ServerName, error: ClientError) -> Error {
    tracing::debug!(%server, %error, "media transfer failed");
    gateway_error(FederationError::Unreachable(error.to_string()))
}
