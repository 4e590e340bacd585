//! Deadlines for every state of a connection, so that no client can hold a
//! connection (one of `max_connections`) without using it.
//!
//! A connection is *busy* while one of its requests is in flight: from the
//! moment its headers are parsed until its response body has been sent (a
//! long-polling `/sync`, a slow upload or a long download are busy, and bound
//! by their own timeouts). A connection that is not busy must start a new
//! request (its headers complete) within a deadline:
//!
//! - `request_timeout_secs` after it was accepted — this covers the TLS
//!   handshake, the choice between HTTP/1.1 and HTTP/2 (a client that sends
//!   nothing, or half of the HTTP/2 preface), and the first request's
//!   headers, however slowly their bytes trickle in;
//! - `keepalive_timeout_secs` after its last response ended (an idle
//!   keep-alive connection, HTTP/1.1 or HTTP/2).
//!
//! Past the deadline the connection is dropped, which closes the socket.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// What the watchdog of one connection knows.
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the connection last stopped being busy (or was accepted).
    idle_since: Mutex<Instant>,
    /// Whether a request was ever seen (the first deadline is shorter).
    served_one: std::sync::atomic::AtomicBool,
    first_request: Duration,
    keepalive: Duration,
}

impl Activity {
    pub fn new(first_request: Duration, keepalive: Duration) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            served_one: Default::default(),
            first_request,
            keepalive,
        })
    }

    /// Marks a request in flight until the returned guard is dropped (with
    /// the response body, see [`TrackedBody`]).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served_one.store(true, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the connection should be dropped if nothing happens meanwhile;
    /// `None` while a request is in flight.
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let allowed = if self.served_one.load(Ordering::SeqCst) { self.keepalive } else { self.first_request };
        Some(self.idle_since() + allowed)
    }

    /// Serves `connection` until it ends or misses a deadline (then drops it).
    /// Returns whether it was dropped for idling.
    pub async fn watch<F: std::future::Future>(&self, connection: F) -> (Option<F::Output>, bool) {
        tokio::pin!(connection);
        loop {
            let wake = self.deadline().unwrap_or_else(|| Instant::now() + self.keepalive.min(self.first_request));
            tokio::select! {
                outcome = &mut connection => return (Some(outcome), false),
                _ = tokio::time::sleep_until(wake) => {
                    if self.deadline().is_some_and(|deadline| deadline <= Instant::now()) {
                        return (None, true);
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time starts now, unless another request is still running.
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in flight until it is sent (or
/// dropped, when the client goes away).
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_miss_their_deadline_and_busy_ones_do_not() {
        let activity = Activity::new(Duration::from_secs(10), Duration::from_secs(60));
        // Never a request: dropped after the first deadline.
        let (outcome, dropped) = activity.watch(std::future::pending::<()>()).await;
        assert!(outcome.is_none() && dropped);

        let activity = Activity::new(Duration::from_secs(10), Duration::from_secs(60));
        let guard = activity.begin();
        let started = Instant::now();
        let busy = async {
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(guard);
            std::future::pending::<()>().await
        };
        let (_, dropped) = activity.watch(busy).await;
        assert!(dropped);
        // Busy for 300 s, then idle for the keep-alive time.
        assert_eq!(started.elapsed(), Duration::from_secs(360));
    }
}
