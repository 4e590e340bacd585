//! Reports of rooms, events and users to the server's admins (client-server
//! API "Reporting content"): stored in the order they came, read by admins.

use super::Rooms;
use crate::{error::Result, storage::records::ReportRecord, storage::Batch};

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub reporter: String,
    /// The room reported, or the event's room (none for a user report).
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    /// The user reported.
    pub user_id: Option<String>,
    pub reason: Option<String>,
    /// When it was received (ms).
    pub ts: u64,
}

impl From<ReportRecord> for Report {
    fn from(record: ReportRecord) -> Self {
        let ReportRecord { reporter, room_id, event_id, user_id, reason, ts } = record;
        Self { reporter, room_id, event_id, user_id, reason, ts }
    }
}

impl From<Report> for ReportRecord {
    fn from(report: Report) -> Self {
        let Report { reporter, room_id, event_id, user_id, reason, ts } = report;
        Self { reporter, room_id, event_id, user_id, reason, ts }
    }
}

impl Rooms {
    /// Stores a report for the server's admins.
    pub async fn report(&self, report: Report) -> Result<()> {
        let mut batch = Batch::new();
        batch.insert(&self.storage.tables.reports, &self.storage.next_count()?, &ReportRecord::from(report))?;
        Ok(self.storage.commit(batch).await?)
    }

    /// Report number `id`.
    pub fn report_by_id(&self, id: u64) -> Result<Option<Report>> {
        Ok(self.storage.tables.reports.get(&id)?.map(Report::from))
    }

    /// Removes report number `id`; whether there was one.
    pub async fn delete_report(&self, id: u64) -> Result<bool> {
        if self.storage.tables.reports.get(&id)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.remove(&self.storage.tables.reports, &id);
        self.storage.commit(batch).await?;
        Ok(true)
    }

    /// Every stored report with its number, oldest first.
    pub fn reports(&self) -> Result<Vec<(u64, Report)>> {
        Ok(self.storage.tables.reports.all()?.into_iter().map(|(id, record)| (id, Report::from(record))).collect())
    }
}
