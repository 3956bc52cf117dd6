//! The typed reads of a node: each sends one [`Query`] value to the shard that owns the data
//! (or to every shard, for the listings that span them) and unpacks its answer. Handlers and
//! tools read through these, never through a shard's memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::UnixMs;
use crate::command::{Query, QueryAnswer};
use crate::error::EngineError;
use crate::ids::AppointmentId;
use crate::model::{CitizenRecord, Status};
use crate::node::{mismatch, Node};
use crate::view::{AppointmentView, AvailabilityView, ClinicSummary, RuntimeCounts, ShardCounts};

impl Node {
    pub async fn get_appointment(
        &self,
        id: AppointmentId,
    ) -> Result<Option<AppointmentView>, EngineError> {
        match self
            .query(id.shard, Query::Appointment { seq: id.seq })
            .await?
        {
            QueryAnswer::Appointment(found) => Ok(found),
            other => Err(mismatch(id.shard, &other)),
        }
    }

    /// A citizen's appointments, oldest first, at most `limit`: the citizen's shard knows
    /// their ids, and only the shards holding them are asked.
    pub async fn citizen_appointments(
        &self,
        citizen_id: &str,
        limit: usize,
    ) -> Result<Vec<AppointmentView>, EngineError> {
        let shard = self.citizen_shard(citizen_id);
        let query = Query::CitizenAppointments {
            citizen_id: citizen_id.to_string(),
        };
        let mut ids = match self.query(shard, query).await? {
            QueryAnswer::AppointmentIds(ids) => ids,
            other => return Err(mismatch(shard, &other)),
        };
        ids.truncate(limit);
        let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for id in ids {
            by_shard.entry(id.shard).or_default().push(id.seq);
        }
        let mut all = Vec::new();
        for (shard, seqs) in by_shard {
            match self.query(shard, Query::Appointments { seqs }).await? {
                QueryAnswer::Appointments(found) => all.extend(found),
                other => return Err(mismatch(shard, &other)),
            }
        }
        all.sort_by_key(|a| (a.created_at_ms, a.id));
        Ok(all)
    }

    /// A clinic's appointments, oldest first, optionally of one slot and one status.
    pub async fn clinic_appointments(
        &self,
        clinic_id: &str,
        slot_id: Option<String>,
        status: Option<Status>,
        limit: usize,
    ) -> Result<Vec<AppointmentView>, EngineError> {
        let shard = self.clinic_shard(clinic_id);
        let query = Query::ClinicAppointments {
            clinic_id: clinic_id.to_string(),
            slot_id,
            status,
            limit,
        };
        match self.query(shard, query).await? {
            QueryAnswer::Appointments(found) => Ok(found),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// A clinic's stock and slots, optionally of one vaccine and a window of start times.
    pub async fn availability(
        &self,
        clinic_id: &str,
        vaccine: Option<String>,
        from_ms: Option<UnixMs>,
        to_ms: Option<UnixMs>,
    ) -> Result<AvailabilityView, EngineError> {
        let shard = self.clinic_shard(clinic_id);
        let query = Query::Availability {
            clinic_id: clinic_id.to_string(),
            vaccine,
            from_ms,
            to_ms,
        };
        match self.query(shard, query).await? {
            QueryAnswer::Availability(view) => Ok(view),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// Every clinic matching the filters, from every shard (in shard order).
    pub async fn clinics(
        &self,
        region: Option<String>,
        vaccine: Option<String>,
    ) -> Result<Vec<ClinicSummary>, EngineError> {
        let mut all = Vec::new();
        let answers = self.query_all(Query::Clinics { region, vaccine }).await?;
        for (shard, answer) in answers.into_iter().enumerate() {
            match answer {
                QueryAnswer::Clinics(found) => all.extend(found),
                other => return Err(mismatch(shard as u32, &other)),
            }
        }
        Ok(all)
    }

    pub async fn citizen(
        &self,
        citizen_id: &str,
    ) -> Result<Option<Arc<CitizenRecord>>, EngineError> {
        let shard = self.citizen_shard(citizen_id);
        let query = Query::Citizen {
            citizen_id: citizen_id.to_string(),
        };
        match self.query(shard, query).await? {
            QueryAnswer::Citizen(found) => Ok(found),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// True when the clinic already stocks `batch` of `vaccine`.
    pub async fn has_batch(
        &self,
        clinic_id: &str,
        vaccine: &str,
        batch: &str,
    ) -> Result<bool, EngineError> {
        let shard = self.clinic_shard(clinic_id);
        let query = Query::HasBatch {
            clinic_id: clinic_id.to_string(),
            vaccine: vaccine.to_string(),
            batch: batch.to_string(),
        };
        match self.query(shard, query).await? {
            QueryAnswer::HasBatch(found) => Ok(found),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// Recomputes `shard`'s counters from its appointments; `Ok(Err(..))` names the first
    /// broken invariant.
    pub async fn check_invariants(&self, shard: u32) -> Result<Result<(), String>, EngineError> {
        match self.query(shard, Query::CheckInvariants).await? {
            QueryAnswer::Invariants(checked) => Ok(checked),
            other => Err(mismatch(shard, &other)),
        }
    }

    /// One shard's counters and runtime figures.
    pub async fn status_of(&self, shard: u32) -> Result<(ShardCounts, RuntimeCounts), EngineError> {
        match self.query(shard, Query::Status).await? {
            QueryAnswer::Status { counts, runtime } => Ok((counts, runtime)),
            other => Err(mismatch(shard, &other)),
        }
    }
}
