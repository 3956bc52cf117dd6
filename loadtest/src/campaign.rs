//! A campaign of the harness's own, set up through the public API only (no back doors):
//! one vaccine, clinics with bulk-uploaded slots and one batch of stock each, and citizens.
//!
//! Every id starts with the run's prefix (and the scenario's name), so several scenarios and
//! several runs can share one server without touching each other's seats.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::client::Method;
use serde::Serialize;
use serde_json::json;

use crate::client::Api;

/// Slots per bulk upload: the API's limit.
pub const BULK_SLOTS_MAX: usize = 1_000;
/// Citizens per bulk registration (`POST /v1/citizens:bulk`): the API's limit, about
/// 130 KiB of JSON an upload.
pub const BULK_CITIZENS_MAX: usize = 1_000;
/// Concurrent requests while setting up clinics and citizens: fast, and far below anything
/// that would queue on the server.
pub const SETUP_CONCURRENCY: usize = 32;
/// Length of one slot; slots of a clinic follow each other from tomorrow on, so none has
/// started (a started slot refuses bookings) however long the run.
pub const SLOT_MINUTES: i64 = 15;
/// The first slot starts this many days from now.
pub const FIRST_SLOT_DAYS_AHEAD: i64 = 1;
/// The one batch of each clinic, and how long it keeps.
pub const BATCH: &str = "B1";
pub const BATCH_EXPIRES_ON: &str = "2099-12-31";
/// Region of every clinic and citizen (the vaccine is offered everywhere).
pub const REGION: &str = "r1";

/// What to create.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignSpec {
    /// Prefix of every id (e.g. `lt-k2x9-launch`).
    pub prefix: String,
    pub clinics: usize,
    pub slots_per_clinic: usize,
    pub capacity: u32,
    pub doses: i64,
    pub citizens: usize,
}

impl CampaignSpec {
    /// Seats one clinic can sell: its seats, or its doses if fewer.
    pub fn sellable_per_clinic(&self) -> u64 {
        let seats = self.slots_per_clinic as u64 * u64::from(self.capacity);
        seats.min(self.doses.max(0) as u64)
    }

    pub fn sellable(&self) -> u64 {
        self.sellable_per_clinic() * self.clinics as u64
    }

    pub fn seats(&self) -> u64 {
        self.clinics as u64 * self.slots_per_clinic as u64 * u64::from(self.capacity)
    }

    pub fn vaccine(&self) -> String {
        format!("{}-vx", self.prefix)
    }

    pub fn clinic_id(&self, clinic: usize) -> String {
        format!("{}-c{clinic}", self.prefix)
    }

    pub fn slot_id(slot: usize) -> String {
        format!("s{slot}")
    }

    pub fn citizen_id(&self, citizen: usize) -> String {
        format!("{}-p{citizen}", self.prefix)
    }

    pub fn clinic_ids(&self) -> Vec<String> {
        (0..self.clinics).map(|c| self.clinic_id(c)).collect()
    }
}

/// How the set-up went, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SetUp {
    pub spec: CampaignSpec,
    pub seats: u64,
    pub sellable: u64,
    pub seconds: f64,
    pub requests: usize,
}

fn expect_200(what: &str, reply: &crate::client::Reply) -> Result<(), String> {
    if reply.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "campaign set-up: {what} answered {} {}: {}",
            reply.status, reply.code, reply.body
        ))
    }
}

/// Runs `job(i)` for `i in 0..n` with at most [`SETUP_CONCURRENCY`] in flight; the first
/// error stops the rest.
async fn for_each_concurrently<F, Fut>(n: usize, job: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let job = Arc::new(job);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SETUP_CONCURRENCY.min(n.max(1)) {
        let (next, failed, job) = (next.clone(), failed.clone(), job.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Err(e) = job(i).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        });
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(|e| format!("campaign set-up task failed: {e}"))?;
        if let (Err(e), None) = (result, &first_error) {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Creates the campaign. Idempotent for the same spec on a fresh prefix; errors name the
/// call that was refused.
pub async fn set_up(api: &Api, authority: &str, spec: &CampaignSpec) -> Result<SetUp, String> {
    let started = Instant::now();
    let vaccine = spec.vaccine();
    let reply = api
        .authority_call(
            Method::PUT,
            authority,
            &format!("/v1/vaccines/{vaccine}"),
            &json!({"min_age": null, "max_age": null, "regions": [], "series_doses": 2,
                    "min_interval_days": 0, "contraindications": []}),
        )
        .await;
    expect_200("PUT vaccine", &reply)?;

    // Whole seconds, so every slot time is short and exact in RFC 3339.
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(FIRST_SLOT_DAYS_AHEAD);
    let start = chrono::DateTime::from_timestamp(tomorrow.timestamp(), 0)
        .ok_or("the clock is out of range")?;
    let chunks = spec.slots_per_clinic.div_ceil(BULK_SLOTS_MAX);
    let requests_per_clinic = 2 + chunks;
    {
        let (api, authority, spec, vaccine) = (
            api.clone(),
            authority.to_string(),
            spec.clone(),
            vaccine.clone(),
        );
        for_each_concurrently(spec.clinics, move |c| {
            let (api, authority, spec, vaccine) = (
                api.clone(),
                authority.clone(),
                spec.clone(),
                vaccine.clone(),
            );
            async move {
                let clinic = spec.clinic_id(c);
                let reply = api
                    .authority_call(
                        Method::PUT,
                        &authority,
                        &format!("/v1/clinics/{clinic}"),
                        &json!({"name": format!("load clinic {c}"), "region": REGION, "timezone": "UTC"}),
                    )
                    .await;
                expect_200("PUT clinic", &reply)?;
                for chunk in 0..chunks {
                    let first = chunk * BULK_SLOTS_MAX;
                    let last = (first + BULK_SLOTS_MAX).min(spec.slots_per_clinic);
                    let slots: Vec<_> = (first..last)
                        .map(|i| {
                            let t = start + chrono::Duration::minutes(SLOT_MINUTES * i as i64);
                            let end = t + chrono::Duration::minutes(SLOT_MINUTES);
                            json!({"slot_id": CampaignSpec::slot_id(i), "start": t.to_rfc3339(),
                                   "end": end.to_rfc3339(), "capacity": spec.capacity,
                                   "vaccines": [vaccine], "priority_reserve": 0})
                        })
                        .collect();
                    let reply = api
                        .authority_call(
                            Method::POST,
                            &authority,
                            &format!("/v1/clinics/{clinic}/slots"),
                            &json!({ "slots": slots }),
                        )
                        .await;
                    expect_200("POST slots", &reply)?;
                }
                let reply = api
                    .authority_call(
                        Method::POST,
                        &authority,
                        &format!("/v1/clinics/{clinic}/stock"),
                        &json!({"vaccine": vaccine, "batch": BATCH, "quantity": spec.doses,
                                "expires_on": BATCH_EXPIRES_ON}),
                    )
                    .await;
                expect_200("POST stock", &reply)
            }
        })
        .await?;
    }
    let citizen_uploads = spec.citizens.div_ceil(BULK_CITIZENS_MAX);
    {
        let (api, authority, spec) = (api.clone(), authority.to_string(), spec.clone());
        for_each_concurrently(citizen_uploads, move |upload| {
            let first = upload * BULK_CITIZENS_MAX;
            let last = (first + BULK_CITIZENS_MAX).min(spec.citizens);
            let citizens: Vec<_> = (first..last)
                .map(|i| {
                    json!({"citizen_id": spec.citizen_id(i), "birth_date": "1980-01-01",
                           "region": REGION, "allergies": [], "insurance_id": format!("I-{i}"),
                           "doses": []})
                })
                .collect();
            let (api, authority) = (api.clone(), authority.clone());
            async move {
                let reply = api
                    .authority_call(
                        Method::POST,
                        &authority,
                        "/v1/citizens:bulk",
                        &json!({ "citizens": citizens }),
                    )
                    .await;
                expect_200("POST citizens:bulk", &reply)
            }
        })
        .await?;
    }
    Ok(SetUp {
        spec: spec.clone(),
        seats: spec.seats(),
        sellable: spec.sellable(),
        seconds: started.elapsed().as_secs_f64(),
        requests: 1 + spec.clinics * requests_per_clinic + citizen_uploads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sellable_is_bounded_by_seats_and_doses() {
        let spec = CampaignSpec {
            prefix: "p".into(),
            clinics: 10,
            slots_per_clinic: 10,
            capacity: 50,
            doses: 400,
            citizens: 1,
        };
        assert_eq!(spec.seats(), 5_000);
        assert_eq!(spec.sellable_per_clinic(), 400);
        assert_eq!(spec.sellable(), 4_000);
        let spec = CampaignSpec {
            doses: 1_000,
            ..spec
        };
        assert_eq!(spec.sellable(), 5_000);
        assert_eq!(spec.clinic_id(3), "p-c3");
        assert_eq!(spec.citizen_id(7), "p-p7");
    }
}
