//! Event reports in the admin API, in Synapse's shapes ("Show reported
//! events"): `GET /_synapse/admin/v1/event_reports` (`from`, `limit`,
//! `dir` — `b`, newest first, by default —, `room_id`, `user_id` of the
//! reporter), `GET`/`DELETE /v1/event_reports/{reportId}`. Reports of whole
//! rooms or of users (without an event) stay at `/_conduit/admin/v1/reports`.

use ruma::EventId;
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    http::{Request, Response},
    rooms::reports::Report,
    services::Services,
};

/// A report as the list shows it (with the room's name and alias, the event's sender).
fn summary(s: &Services, id: u64, report: &Report) -> Result<Value> {
    let room = match report.room_id.as_deref().and_then(|room| ruma::RoomId::parse(room).ok()) {
        Some(room_id) => s.rooms.overview(&room_id)?,
        None => None,
    };
    let event = match report.event_id.as_deref().and_then(|id| EventId::parse(id).ok()) {
        Some(event_id) => s.rooms.get_pdu(&event_id)?.map(|(pdu, _)| pdu),
        None => None,
    };
    Ok(json!({
        "id": id,
        "received_ts": report.ts,
        "room_id": report.room_id,
        "name": room.as_ref().and_then(|room| room.name.clone()),
        "canonical_alias": room.as_ref().and_then(|room| room.canonical_alias.clone()),
        "event_id": report.event_id,
        "user_id": report.reporter,
        "reason": report.reason,
        "score": null,
        "sender": event.as_ref().map(|pdu| pdu.sender_str().to_owned()),
    }))
}

fn report_param(request: &Request) -> Result<u64> {
    let raw = request.param("report_id")?;
    raw.parse().map_err(|_| Error::invalid_param(format!("{raw:?} is not a report id")))
}

/// `GET /_synapse/admin/v1/event_reports`.
pub fn list(s: &Services, request: &Request) -> Result<Response> {
    let paging = super::Paging::of(request)?;
    let mut reports: Vec<(u64, Report)> = s
        .rooms
        .reports()?
        .into_iter()
        .filter(|(_, report)| report.event_id.is_some())
        .filter(|(_, report)| request.query("room_id").is_none_or(|room| report.room_id.as_deref() == Some(room)))
        .filter(|(_, report)| request.query("user_id").is_none_or(|user| report.reporter == user))
        .collect();
    if request.query("dir") != Some("f") {
        reports.reverse(); // newest first, as Synapse
    }
    let total = reports.len();
    let page: Vec<Value> = paging.page(&reports).map(|(id, report)| summary(s, *id, report)).collect::<Result<_>>()?;
    let mut body = json!({ "event_reports": page, "total": total });
    if let Some(next) = paging.next(total) {
        body["next_token"] = json!(next);
    }
    Ok(Response::json(&body))
}

/// `GET /_synapse/admin/v1/event_reports/{reportId}`: with the event itself.
pub fn get(s: &Services, request: &Request) -> Result<Response> {
    let id = report_param(request)?;
    let report = s.rooms.report_by_id(id)?.filter(|report| report.event_id.is_some());
    let report = report.ok_or_else(|| Error::not_found("No such event report"))?;
    let mut body = summary(s, id, &report)?;
    let event = report.event_id.as_deref().and_then(|id| EventId::parse(id).ok());
    let event_json = match event {
        Some(event_id) => {
            s.rooms.get_pdu(&event_id)?.map(|(pdu, _)| crate::rooms::client_event(&pdu, &pdu.room_id_or_derived()))
        }
        None => None,
    };
    body["event_json"] = event_json.unwrap_or(Value::Null);
    Ok(Response::json(&body))
}

/// `DELETE /_synapse/admin/v1/event_reports/{reportId}`.
pub async fn delete(s: &Services, request: &Request) -> Result<Response> {
    let id = report_param(request)?;
    if !s.rooms.delete_report(id).await? {
        return Err(Error::not_found("No such event report"));
    }
    Ok(Response::empty_object())
}
