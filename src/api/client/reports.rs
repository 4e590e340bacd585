//! Reporting rooms and events to the server's admins.
//!
//! Spec: client-server API "Reporting content":
//! `POST /rooms/{roomId}/report/{eventId}` (the reporter must be in the room
//! and able to see the event), `POST /rooms/{roomId}/report` and
//! `POST /users/{userId}/report` (v1.14). Reports are
//! stored for admins, who read them at `GET /_conduit/admin/v1/reports`
//! (server admins only); room and user reports answer 200 whether or not the
//! room or user exists, as the spec allows, so reports cannot probe for them.

use ruma::{EventId, UserId};
use serde::Deserialize;

use crate::rooms::Membership;
use crate::{
    error::{Error, Result},
    http::{Request, Response},
    rooms::reports::Report,
    services::Services,
    users::Identity,
    util::now_ms,
};

use super::room_events::room_id_param;

/// Longest reason kept.
const MAX_REASON_BYTES: usize = 1000;

#[derive(Debug, Default, Deserialize)]
struct ReportBody {
    reason: Option<String>,
}

fn reason(request: &Request) -> Result<Option<String>> {
    let body: ReportBody = request.json()?;
    if body.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(Error::invalid_param(format!("The reason is longer than {MAX_REASON_BYTES} bytes")));
    }
    Ok(body.reason)
}

pub async fn report_event(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let not_found = || Error::not_found("The event was not found or you are not joined to the room");
    let event_id = EventId::parse(request.param("event_id")?).map_err(|_| not_found())?;
    let reason = reason(request)?;
    if s.rooms.membership(&room_id, &who.user_id)? != Some(Membership::Join) {
        return Err(not_found());
    }
    let (pdu, stored) = s.rooms.get_pdu(&event_id)?.ok_or_else(not_found)?;
    if stored.room_id != room_id.as_str() || !s.rooms.can_see_event(&who.user_id, &pdu, &stored)? {
        return Err(not_found());
    }
    let record = Report {
        reporter: who.user_id.to_string(),
        room_id: Some(room_id.to_string()),
        event_id: Some(event_id.to_string()),
        user_id: None,
        reason,
        ts: now_ms(),
    };
    s.rooms.report(record).await?;
    tracing::warn!(room = %room_id, event = %event_id, reporter = %who.user_id, "event reported");
    Ok(Response::empty_object())
}

pub async fn report_room(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let room_id = room_id_param(request)?;
    let reason = reason(request)?;
    if s.rooms.room(&room_id)?.is_some() {
        let record = Report {
            reporter: who.user_id.to_string(),
            room_id: Some(room_id.to_string()),
            event_id: None,
            user_id: None,
            reason,
            ts: now_ms(),
        };
        s.rooms.report(record).await?;
        tracing::warn!(room = %room_id, reporter = %who.user_id, "room reported");
    }
    Ok(Response::empty_object())
}

pub async fn report_user(s: &Services, request: &Request, who: &Identity) -> Result<Response> {
    let user_id = UserId::parse(request.param("user_id")?).map_err(|_| Error::invalid_param("Invalid user id"))?;
    let reason = reason(request)?;
    // Users of other servers cannot be checked yet (no federation): kept for the admins.
    let known = user_id.server_name() != s.config.server_name || s.users.get(user_id.localpart())?.is_some();
    if known {
        let record = Report {
            reporter: who.user_id.to_string(),
            room_id: None,
            event_id: None,
            user_id: Some(user_id.to_string()),
            reason,
            ts: now_ms(),
        };
        s.rooms.report(record).await?;
        tracing::warn!(reported = %user_id, reporter = %who.user_id, "user reported");
    }
    Ok(Response::empty_object())
}

/// `GET /_conduit/admin/v1/reports`: every stored report, newest first.
pub fn list_for_admins(s: &Services, who: &Identity) -> Result<Response> {
    if !who.is_admin {
        return Err(Error::forbidden("Only server admins can read reports"));
    }
    let mut reports = s.rooms.reports()?;
    reports.reverse();
    let chunk: Vec<serde_json::Value> = reports
        .into_iter()
        .map(|(id, report)| {
            serde_json::json!({
                "id": id,
                "reporter": report.reporter,
                "room_id": report.room_id,
                "event_id": report.event_id,
                "user_id": report.user_id,
                "reason": report.reason,
                "received_ts": report.ts,
            })
        })
        .collect();
    Ok(Response::json(&serde_json::json!({ "reports": chunk })))
}
