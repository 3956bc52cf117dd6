//! The bodies of the catalogue and availability routes (docs/API.md, Catalogue and
//! Availability), with their OpenAPI schemas and validation.
//!
//! Request types deny unknown fields and are validated into engine commands here, so the
//! handlers never see an unchecked id, time or range. Response types render engine views;
//! they are separate from anything the log stores.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use holdfast_engine::command::{AdjustStock, ReceiveStock};
use holdfast_engine::model::{
    CitizenRecord, ClinicInfo, DoseRecord, SlotSpec, VaccineRules, SLOTS_BULK_MAX,
    SLOT_CAPACITY_MAX, STOCK_QUANTITY_MAX,
};
use holdfast_engine::view::{AvailabilityView, ClinicSummary, SlotView, StockView};
use holdfast_engine::Command;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::routes::fields::{
    check_id, check_list, check_text, client_id_list_schema, client_id_schema, non_empty, rfc3339,
    rfc3339_local, text_schema, LIST_ITEMS_MAX, TEXT_BYTES_MAX,
};

/// `PUT /v1/vaccines/{vaccine}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaccineBody {
    #[serde(default)]
    #[schema(maximum = 150)]
    pub min_age: Option<u32>,
    /// At least `min_age`.
    #[serde(default)]
    #[schema(maximum = 150)]
    pub max_age: Option<u32>,
    /// Empty: every region.
    #[serde(default)]
    #[schema(schema_with = client_id_list_schema)]
    pub regions: Vec<String>,
    #[schema(minimum = 1, maximum = 20)]
    pub series_doses: u32,
    #[schema(maximum = 3650)]
    pub min_interval_days: u32,
    #[serde(default)]
    #[schema(schema_with = client_id_list_schema)]
    pub contraindications: Vec<String>,
}

impl VaccineBody {
    pub fn validate(self) -> Result<VaccineRules, ApiError> {
        if let (Some(min), Some(max)) = (self.min_age, self.max_age) {
            if min > max {
                return Err(ApiError::bad_request(
                    "max_age",
                    "max_age must not be below min_age",
                ));
            }
        }
        if self.min_age.is_some_and(|a| a > 150) || self.max_age.is_some_and(|a| a > 150) {
            return Err(ApiError::bad_request("min_age", "ages must be at most 150"));
        }
        if !(1..=20).contains(&self.series_doses) {
            return Err(ApiError::bad_request(
                "series_doses",
                "series_doses must be 1..=20",
            ));
        }
        if self.min_interval_days > 3650 {
            return Err(ApiError::bad_request(
                "min_interval_days",
                "min_interval_days must be at most 3650",
            ));
        }
        check_list("regions", &self.regions)?;
        check_list("contraindications", &self.contraindications)?;
        Ok(VaccineRules {
            min_age: self.min_age,
            max_age: self.max_age,
            regions: self.regions,
            series_doses: self.series_doses,
            min_interval_days: self.min_interval_days,
            contraindications: self.contraindications,
        })
    }
}

/// The vaccine as stored: its id and the body's fields. (Not `VaccineBody` flattened in: the
/// body's schema forbids other properties, so an `allOf` of it could never match this.)
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VaccineJson {
    pub vaccine: String,
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
    pub regions: Vec<String>,
    pub series_doses: u32,
    pub min_interval_days: u32,
    pub contraindications: Vec<String>,
}

impl VaccineJson {
    pub fn echo(vaccine: String, body: VaccineBody) -> Self {
        VaccineJson {
            vaccine,
            min_age: body.min_age,
            max_age: body.max_age,
            regions: body.regions,
            series_doses: body.series_doses,
            min_interval_days: body.min_interval_days,
            contraindications: body.contraindications,
        }
    }
}

/// `PUT /v1/clinics/{clinic_id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClinicBody {
    #[schema(schema_with = text_schema)]
    pub name: String,
    #[schema(schema_with = client_id_schema)]
    pub region: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
}

impl ClinicBody {
    pub fn validate(self) -> Result<ClinicInfo, ApiError> {
        check_text("name", &self.name)?;
        check_id("region", &self.region)?;
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ApiError::bad_request(
                "timezone",
                "timezone must be an IANA time zone name such as Europe/Berlin",
            ));
        }
        Ok(ClinicInfo {
            name: self.name,
            region: self.region,
            timezone: self.timezone,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClinicJson {
    pub clinic_id: String,
    pub name: String,
    pub region: String,
    pub timezone: String,
}

/// `POST /v1/clinics/{clinic_id}/stock`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBody {
    #[schema(schema_with = client_id_schema)]
    pub vaccine: String,
    #[schema(schema_with = client_id_schema)]
    pub batch: String,
    /// 1..=10,000,000 (`STOCK_QUANTITY_MAX`)
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub quantity: i64,
    #[schema(value_type = String, format = Date)]
    pub expires_on: NaiveDate,
}

impl StockBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("vaccine", &self.vaccine)?;
        check_id("batch", &self.batch)?;
        if !(1..=STOCK_QUANTITY_MAX).contains(&self.quantity) {
            return Err(ApiError::bad_request(
                "quantity",
                format!("quantity must be 1..={STOCK_QUANTITY_MAX}"),
            ));
        }
        Ok(())
    }

    pub fn command(&self, clinic_id: &str) -> Command {
        Command::ReceiveStock(ReceiveStock {
            clinic_id: clinic_id.to_string(),
            vaccine: self.vaccine.clone(),
            batch: self.batch.clone(),
            quantity: self.quantity,
            expires_on: self.expires_on,
        })
    }
}

/// `POST /v1/clinics/{clinic_id}/stock/adjust`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    #[schema(schema_with = client_id_schema)]
    pub vaccine: String,
    #[schema(schema_with = client_id_schema)]
    pub batch: String,
    /// Non-zero, at most 10,000,000 either way.
    #[schema(minimum = -10_000_000, maximum = 10_000_000)]
    pub delta: i64,
    #[schema(schema_with = text_schema)]
    pub reason: String,
}

impl AdjustBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        check_id("vaccine", &self.vaccine)?;
        check_id("batch", &self.batch)?;
        if self.delta == 0 || self.delta.abs() > STOCK_QUANTITY_MAX {
            return Err(ApiError::bad_request(
                "delta",
                format!("delta must be non-zero and at most {STOCK_QUANTITY_MAX} either way"),
            ));
        }
        check_text("reason", &self.reason)
    }

    pub fn command(&self, clinic_id: &str) -> Command {
        Command::AdjustStock(AdjustStock {
            clinic_id: clinic_id.to_string(),
            vaccine: self.vaccine.clone(),
            batch: self.batch.clone(),
            delta: self.delta,
            reason: self.reason.clone(),
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockJson {
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`; negative after a downward adjustment below what is reserved.
    pub available: i64,
}

impl From<&StockView> for StockJson {
    fn from(s: &StockView) -> Self {
        StockJson {
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClinicStockJson {
    pub clinic_id: String,
    pub vaccine: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

impl ClinicStockJson {
    pub fn render(clinic_id: String, s: &StockView) -> Self {
        ClinicStockJson {
            clinic_id,
            vaccine: s.vaccine.to_string(),
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
        }
    }
}

/// `PUT /v1/clinics/{clinic_id}/slots/{slot_id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotBody {
    pub start: DateTime<Utc>,
    /// After `start`.
    pub end: DateTime<Utc>,
    /// 1..=100,000 (`SLOT_CAPACITY_MAX`)
    #[schema(minimum = 1, maximum = 100_000)]
    pub capacity: u32,
    /// At least one.
    #[schema(schema_with = slot_vaccines_schema)]
    pub vaccines: Vec<String>,
    /// At most `capacity`.
    #[serde(default)]
    #[schema(maximum = 100_000)]
    pub priority_reserve: u32,
}

impl SlotBody {
    pub fn validate(&self) -> Result<SlotSpec, ApiError> {
        slot_spec(
            "",
            self.start,
            self.end,
            self.capacity,
            self.vaccines.clone(),
            self.priority_reserve,
        )
    }
}

/// One slot of `POST /v1/clinics/{clinic_id}/slots`. It repeats `SlotBody`'s fields rather
/// than flattening them in, because `#[serde(flatten)]` disables `deny_unknown_fields` (and
/// unknown fields must stay a 400).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSlotBody {
    #[schema(schema_with = client_id_schema)]
    pub slot_id: String,
    pub start: DateTime<Utc>,
    /// After `start`.
    pub end: DateTime<Utc>,
    #[schema(minimum = 1, maximum = 100_000)]
    pub capacity: u32,
    #[schema(schema_with = slot_vaccines_schema)]
    pub vaccines: Vec<String>,
    /// At most `capacity`.
    #[serde(default)]
    #[schema(maximum = 100_000)]
    pub priority_reserve: u32,
}

/// `POST /v1/clinics/{clinic_id}/slots` (at most 1,000 slots).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSlotsBody {
    /// 1..=1,000 (`SLOTS_BULK_MAX`) slots, each `slot_id` once.
    #[schema(min_items = 1, max_items = 1000)]
    pub slots: Vec<BulkSlotBody>,
}

/// The vaccines a slot offers: a list of ids, at least one.
fn slot_vaccines_schema() -> utoipa::openapi::Array {
    let mut list = client_id_list_schema();
    list.min_items = Some(1);
    list
}

/// A slot's fields, checked; `prefix` starts the field paths of its errors (`slots[3].`).
fn slot_spec(
    prefix: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    capacity: u32,
    vaccines: Vec<String>,
    priority_reserve: u32,
) -> Result<SlotSpec, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    if end <= start {
        return Err(ApiError::bad_request(
            &field("end"),
            "end must be after start",
        ));
    }
    if !(1..=SLOT_CAPACITY_MAX).contains(&capacity) {
        return Err(ApiError::bad_request(
            &field("capacity"),
            format!("capacity must be 1..={SLOT_CAPACITY_MAX}"),
        ));
    }
    if priority_reserve > capacity {
        return Err(ApiError::bad_request(
            &field("priority_reserve"),
            "priority_reserve must not exceed capacity",
        ));
    }
    if vaccines.is_empty() {
        return Err(ApiError::bad_request(
            &field("vaccines"),
            "a slot offers at least one vaccine",
        ));
    }
    check_list(&field("vaccines"), &vaccines)?;
    Ok(SlotSpec {
        start_ms: start.timestamp_millis(),
        end_ms: end.timestamp_millis(),
        capacity,
        vaccines,
        priority_reserve,
    })
}

impl BulkSlotsBody {
    pub fn validate(self) -> Result<Vec<(String, SlotSpec)>, ApiError> {
        if self.slots.is_empty() || self.slots.len() > SLOTS_BULK_MAX {
            return Err(ApiError::bad_request(
                "slots",
                format!("slots must hold 1..={SLOTS_BULK_MAX} entries"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.into_iter().enumerate() {
            let prefix = format!("slots[{i}].");
            check_id(&format!("{prefix}slot_id"), &s.slot_id)?;
            if !seen.insert(s.slot_id.clone()) {
                return Err(ApiError::bad_request(
                    &format!("{prefix}slot_id"),
                    "slot_id appears twice in one upload",
                ));
            }
            let spec = slot_spec(
                &prefix,
                s.start,
                s.end,
                s.capacity,
                s.vaccines,
                s.priority_reserve,
            )?;
            out.push((s.slot_id, spec));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotJson {
    pub slot_id: String,
    /// UTC (RFC 3339).
    pub start: String,
    pub end: String,
    /// `start` on the clinic's wall clock, with the clinic's UTC offset at that instant
    /// (`2027-03-28T03:00:00+02:00`).
    pub start_local: String,
    /// `end` on the clinic's wall clock, with the clinic's UTC offset at that instant.
    pub end_local: String,
    pub capacity: u32,
    pub remaining: u32,
    pub pending: u32,
    pub confirmed: u32,
    pub administered: u32,
    pub no_show: u32,
    pub priority_reserve: u32,
    pub vaccines: Vec<String>,
    pub cancelled: bool,
}

impl From<&SlotView> for SlotJson {
    fn from(s: &SlotView) -> Self {
        SlotJson {
            slot_id: s.slot_id.to_string(),
            start: rfc3339(s.start_ms),
            end: rfc3339(s.end_ms),
            start_local: rfc3339_local(&s.start_local),
            end_local: rfc3339_local(&s.end_local),
            capacity: s.capacity,
            remaining: s.remaining,
            pending: s.pending,
            confirmed: s.confirmed,
            administered: s.administered,
            no_show: s.no_show,
            priority_reserve: s.priority_reserve,
            vaccines: s.vaccines.iter().map(|v| v.to_string()).collect(),
            cancelled: s.cancelled,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotsJson {
    pub clinic_id: String,
    pub slots: Vec<SlotJson>,
}

/// `POST /v1/clinics/{clinic_id}/slots/{slot_id}/cancel`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSlotBody {
    /// 1-256 bytes, not only blanks.
    #[schema(min_length = 1, max_length = 256)]
    pub reason: String,
}

impl CancelSlotBody {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.reason.trim().is_empty() || self.reason.len() > TEXT_BYTES_MAX {
            return Err(ApiError::bad_request(
                "reason",
                format!("reason must be 1-{TEXT_BYTES_MAX} bytes"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotCancelledJson {
    pub clinic_id: String,
    pub slot: SlotJson,
    /// Appointments that became CLINIC_CANCELLED (with `rebook_priority`).
    pub affected_appointment_ids: Vec<String>,
}

/// `PUT /v1/citizens/{citizen_id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CitizenBody {
    #[schema(value_type = String, format = Date)]
    pub birth_date: NaiveDate,
    #[schema(schema_with = client_id_schema)]
    pub region: String,
    #[serde(default)]
    #[schema(schema_with = client_id_list_schema)]
    pub allergies: Vec<String>,
    #[schema(schema_with = text_schema)]
    pub insurance_id: String,
    /// At most 64 (`LIST_ITEMS_MAX`).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub doses: Vec<DoseBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DoseBody {
    #[schema(schema_with = client_id_schema)]
    pub vaccine: String,
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
}

impl CitizenBody {
    pub fn validate(self) -> Result<CitizenRecord, ApiError> {
        self.validate_at("")
    }

    /// Checks the fields; `prefix` starts the field paths of its errors (`citizens[3].`).
    fn validate_at(self, prefix: &str) -> Result<CitizenRecord, ApiError> {
        let field = |name: &str| format!("{prefix}{name}");
        check_id(&field("region"), &self.region)?;
        check_list(&field("allergies"), &self.allergies)?;
        check_text(&field("insurance_id"), &self.insurance_id)?;
        if self.doses.len() > LIST_ITEMS_MAX {
            return Err(ApiError::bad_request(
                &field("doses"),
                format!("doses has more than {LIST_ITEMS_MAX} entries"),
            ));
        }
        for d in &self.doses {
            check_id(&field("doses.vaccine"), &d.vaccine)?;
        }
        Ok(CitizenRecord {
            birth_date: self.birth_date,
            region: self.region,
            allergies: self.allergies,
            insurance_id: self.insurance_id,
            doses: self
                .doses
                .into_iter()
                .map(|d| DoseRecord {
                    vaccine: d.vaccine,
                    date: d.date,
                })
                .collect(),
        })
    }
}

/// Most citizens one `POST /v1/citizens:bulk` registers: about 150 KiB of JSON at the demo's
/// records, well inside the bulk body limit (1 MiB), and one journal op per shard touched.
pub const CITIZENS_BULK_MAX: usize = 1000;

/// One citizen of `POST /v1/citizens:bulk`: its id and `CitizenBody`'s fields, repeated
/// rather than flattened in (the reason is at [`BulkSlotBody`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkCitizenBody {
    #[schema(schema_with = client_id_schema)]
    pub citizen_id: String,
    #[schema(value_type = String, format = Date)]
    pub birth_date: NaiveDate,
    #[schema(schema_with = client_id_schema)]
    pub region: String,
    #[serde(default)]
    #[schema(schema_with = client_id_list_schema)]
    pub allergies: Vec<String>,
    #[schema(schema_with = text_schema)]
    pub insurance_id: String,
    /// At most 64 (`LIST_ITEMS_MAX`).
    #[serde(default)]
    #[schema(max_items = 64)]
    pub doses: Vec<DoseBody>,
}

/// `POST /v1/citizens:bulk` (at most 1,000 citizens).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CitizensBulkBody {
    /// 1..=1,000 (`CITIZENS_BULK_MAX`) citizens, each `citizen_id` once.
    #[schema(min_items = 1, max_items = 1000)]
    pub citizens: Vec<BulkCitizenBody>,
}

impl CitizensBulkBody {
    /// Every record checked (the first failure answers, with its index), each id once.
    pub fn validate(self) -> Result<Vec<(String, CitizenRecord)>, ApiError> {
        if self.citizens.is_empty() || self.citizens.len() > CITIZENS_BULK_MAX {
            return Err(ApiError::bad_request(
                "citizens",
                format!("citizens must hold 1..={CITIZENS_BULK_MAX} entries"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.citizens.len());
        for (i, c) in self.citizens.into_iter().enumerate() {
            let prefix = format!("citizens[{i}].");
            check_id(&format!("{prefix}citizen_id"), &c.citizen_id)?;
            if !seen.insert(c.citizen_id.clone()) {
                return Err(ApiError::bad_request(
                    &format!("{prefix}citizen_id"),
                    "citizen_id appears twice in one upload",
                ));
            }
            let body = CitizenBody {
                birth_date: c.birth_date,
                region: c.region,
                allergies: c.allergies,
                insurance_id: c.insurance_id,
                doses: c.doses,
            };
            out.push((c.citizen_id, body.validate_at(&prefix)?));
        }
        Ok(out)
    }
}

/// The answer to `POST /v1/citizens:bulk`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CitizensStoredJson {
    /// How many records were stored (all of the upload's).
    pub stored: usize,
}

/// The citizen as stored: its id and the body's fields (not `CitizenBody` flattened in, for
/// the reason given at [`VaccineJson`]).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CitizenJson {
    pub citizen_id: String,
    #[schema(value_type = String, format = Date)]
    pub birth_date: NaiveDate,
    pub region: String,
    pub allergies: Vec<String>,
    pub insurance_id: String,
    pub doses: Vec<DoseJson>,
}

/// A dose of [`CitizenJson`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DoseJson {
    pub vaccine: String,
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
}

impl CitizenJson {
    pub fn echo(citizen_id: String, body: CitizenBody) -> Self {
        CitizenJson {
            citizen_id,
            birth_date: body.birth_date,
            region: body.region,
            allergies: body.allergies,
            insurance_id: body.insurance_id,
            doses: body
                .doses
                .into_iter()
                .map(|d| DoseJson {
                    vaccine: d.vaccine,
                    date: d.date,
                })
                .collect(),
        }
    }
}

// ---- availability ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClinicSummaryJson {
    pub clinic_id: String,
    pub name: String,
    pub region: String,
    pub timezone: String,
    /// Per vaccine, `on_hand - reserved`.
    pub available_doses: BTreeMap<String, i64>,
}

impl From<&ClinicSummary> for ClinicSummaryJson {
    fn from(c: &ClinicSummary) -> Self {
        ClinicSummaryJson {
            clinic_id: c.clinic_id.to_string(),
            name: c.info.name.clone(),
            region: c.info.region.clone(),
            timezone: c.info.timezone.clone(),
            available_doses: c
                .available_doses
                .iter()
                .map(|(v, n)| (v.to_string(), *n))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClinicsJson {
    pub clinics: Vec<ClinicSummaryJson>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AvailabilityJson {
    pub clinic_id: String,
    /// The clinic's IANA time zone (`Europe/Berlin`): the zone of `start_local`/`end_local`.
    pub timezone: String,
    pub stock: BTreeMap<String, StockJson>,
    pub slots: Vec<SlotJson>,
}

impl From<&AvailabilityView> for AvailabilityJson {
    fn from(a: &AvailabilityView) -> Self {
        AvailabilityJson {
            clinic_id: a.clinic_id.to_string(),
            timezone: a.timezone.clone(),
            stock: a
                .stock
                .iter()
                .map(|s| (s.vaccine.to_string(), StockJson::from(s)))
                .collect(),
            slots: a.slots.iter().map(SlotJson::from).collect(),
        }
    }
}

/// `GET /v1/clinics`: query parameters, each optional (empty means no filter too).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClinicsQuery {
    /// Only clinics of this region.
    #[param(schema_with = client_id_schema)]
    pub region: Option<String>,
    /// Only clinics with this vaccine in stock or offered.
    #[param(schema_with = client_id_schema)]
    pub vaccine: Option<String>,
}

impl ClinicsQuery {
    /// The region and the vaccine to list, each `None` for all.
    pub fn filters(&self) -> Result<(Option<String>, Option<String>), ApiError> {
        let region = non_empty(&self.region).map(str::to_string);
        let vaccine = non_empty(&self.vaccine).map(str::to_string);
        if let Some(r) = &region {
            check_id("region", r)?;
        }
        if let Some(v) = &vaccine {
            check_id("vaccine", v)?;
        }
        Ok((region, vaccine))
    }
}

/// `GET /v1/clinics/{clinic_id}/availability`: query parameters, each optional (empty means
/// no filter too).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// Only this vaccine's stock and the slots offering it.
    #[param(schema_with = client_id_schema)]
    pub vaccine: Option<String>,
    /// Slots starting at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Slots starting before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
}

/// The filters of an availability read: a vaccine, and a window of start times in unix ms.
pub type AvailabilityFilters = (Option<String>, Option<i64>, Option<i64>);

impl AvailabilityQuery {
    pub fn filters(&self) -> Result<AvailabilityFilters, ApiError> {
        let vaccine = non_empty(&self.vaccine).map(str::to_string);
        if let Some(v) = &vaccine {
            check_id("vaccine", v)?;
        }
        let from = query_instant_ms("from", &self.from)?;
        let to = query_instant_ms("to", &self.to)?;
        Ok((vaccine, from, to))
    }
}

/// An optional RFC 3339 instant from a query parameter, in unix ms.
fn query_instant_ms(field: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    match non_empty(value) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|_| {
                ApiError::bad_request(
                    field,
                    format!("{field} must be an RFC 3339 time such as 2026-12-01T09:00:00Z"),
                )
            }),
    }
}
