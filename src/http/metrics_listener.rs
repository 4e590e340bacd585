//! The metrics listener (`[metrics] address`): plain HTTP/1.1, `GET /metrics`
//! only (OpenMetrics text, see [`crate::metrics`]), at most
//! [`MAX_CONNECTIONS`] connections, each request within [`REQUEST_TIMEOUT`].
//! Meant for loopback or the monitoring network: it answers anyone who
//! reaches it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};

use super::response::{into_hyper, HyperBody, Response};
use crate::services::Services;

/// Scrapers connected at once.
const MAX_CONNECTIONS: usize = 16;
/// Time a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The OpenMetrics text format's content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `socket` until `stopped` changes.
pub async fn serve(socket: TcpListener, services: Arc<Services>, mut stopped: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let stream = tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let services = Arc::clone(&services);
        tokio::spawn(async move {
            let service = service_fn(|request| answer(Arc::clone(&services), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 6, connection).await;
            drop(permit);
        });
    }
}

async fn answer(
    services: Arc<Services>,
    request: hyper::Request<Incoming>,
) -> Result<http::Response<HyperBody>, Infallible> {
    let response = if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
        let text = tokio::task::spawn_blocking(move || services.render_metrics()).await.unwrap_or_default();
        Response::bytes(text.into_bytes(), CONTENT_TYPE.to_owned())
    } else {
        Response::bytes(b"Not found: ask GET /metrics\n".to_vec(), "text/plain; charset=utf-8".to_owned())
            .with_status(404)
    };
    Ok(into_hyper(response))
}
