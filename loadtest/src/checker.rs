//! The invariant checker: after a scenario (and after every restart of a crash rehearsal)
//! the harness reads the campaign's clinics through the public API into a [`Picture`] and
//! checks it, together with the run's [`Ledger`], against the invariants of docs/ARCHITECTURE.md.
//!
//! Taking the picture ([`fetch_picture`]) is the only I/O; [`check`] is a pure function, so
//! tests can feed it any picture, consistent or deliberately broken, and prove that every
//! check can fail.
//!
//! What is checked (each finding is a [`Violation`] of one [`ViolationKind`]):
//! 1. slot counters add up to the capacity and none is negative (a cancelled slot has no
//!    remaining, pending or confirmed seat);
//! 2. no slot has more seat-holding appointments than seats, and the slot counters equal the
//!    appointments the clinic lists;
//! 3. per clinic and vaccine, `reserved` equals the PENDING and CONFIRMED appointments,
//!    `available = on_hand - reserved` and `on_hand >= 0`; where the ledger knows what the
//!    clinic received, `on_hand` is exactly that minus the ADMINISTERED appointments listed
//!    (the harness makes no adjustments), so the stock moved by exactly the administrations
//!    (every acknowledged one is among them, by 4);
//! 4. every acknowledged create, confirm, cancel, administration (ADMINISTERED, with the
//!    acknowledged batch) is still there, in a status at least as far as the acknowledged
//!    one, with the acknowledged slot, citizen and vaccine;
//! 5. every deliberate Idempotency-Key replay got the first answer's status and appointment;
//! 6. optionally, at most one PENDING or CONFIRMED appointment per citizen;
//! 7. no hold outlived its `expires_at` by more than the allowed slack; with a known
//!    no-show grace, no appointment is still CONFIRMED more than grace + slack after its
//!    slot ended, and every appointment the harness left to fall due as a no-show is
//!    CONFIRMED (not yet due), NO_SHOW or ADMINISTERED;
//! 8. every appointment has a known status, a slot its clinic has, and sits in one listing;
//! 9. every acknowledged slot cancellation holds: the slot is cancelled and its
//!    CLINIC_CANCELLED appointments are exactly those the answer listed;
//! 10. every acknowledged waitlist join is still waiting in its citizen's listing, or was
//!     served (an appointment of that citizen in that slot `offered_from_waitlist`), or went
//!     with its cancelled slot.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::http::{Failure, Http, Req};
use crate::ledger::{AckKind, Acked, Ledger, Replay, SlotCancel, WaitlistJoin};

/// Clinics read at the same time by [`fetch_picture`]: enough to read a few hundred clinics
/// in well under a second, few enough not to look like load to the server.
pub const FETCH_CONCURRENCY: usize = 16;
/// Attempts per clinic to read a stable picture (see [`fetch_picture`]) before giving up.
pub const FETCH_ATTEMPTS: u32 = 5;
/// Pause before the second attempt at a clinic whose availability moved while it was read;
/// it grows linearly with each further attempt, so a burst of expiries can settle.
pub const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Every request of the checker gives up after this long (connect to last body byte).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most appointments one listing answer holds. The server cuts a listing at this many
/// without saying so; a listing this long may be incomplete, so [`fetch_picture`] lists
/// again per slot, then per slot and status.
pub const LISTING_CAP: usize = holdfast_gateway::routes::booking::LISTING_APPOINTMENTS_MAX;
/// Violations listed per [`ViolationKind`]; the rest are counted in one
/// [`ViolationKind::Truncated`] entry, so a flood of one kind cannot hide the others and the
/// report stays readable. [`CheckReport::violations_total`] counts every one.
pub const VIOLATIONS_PER_KIND_MAX: usize = 100;
/// Ids listed in one violation (an oversold slot can involve thousands of appointments);
/// the message says how many there were.
pub const IDS_PER_VIOLATION_MAX: usize = 50;
/// Characters of an unexpected answer body quoted in an error.
const BODY_EXCERPT_CHARS: usize = 300;

/// Every appointment status of the contract (docs/API.md, Booking).
pub const STATUSES: [&str; 9] = [
    "PENDING",
    "CONFIRMED",
    "ADMINISTERED",
    "EXPIRED",
    "RELEASED",
    "REJECTED",
    "CANCELLED",
    "NO_SHOW",
    "CLINIC_CANCELLED",
];
/// Statuses that hold or used a seat of their slot: at most `capacity` per slot.
const SEAT_STATUSES: [&str; 4] = ["PENDING", "CONFIRMED", "ADMINISTERED", "NO_SHOW"];
/// Statuses that reserve a dose and count as the citizen's one active appointment.
const ACTIVE_STATUSES: [&str; 2] = ["PENDING", "CONFIRMED"];
/// Where a CONFIRMED appointment can be later: statuses only move forward.
const CONFIRMED_OR_LATER: [&str; 5] = [
    "CONFIRMED",
    "ADMINISTERED",
    "CANCELLED",
    "NO_SHOW",
    "CLINIC_CANCELLED",
];

// ---- the picture -----------------------------------------------------------------------

/// Everything the checker needs, read from the server's public API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    /// When reading began: every clinic was read at or after this instant, so an
    /// appointment seen PENDING with `expires_at` well before it really outlived its hold.
    pub taken_at: DateTime<Utc>,
    pub clinics: Vec<ClinicPicture>,
    /// `GET /v1/citizens/{id}/waitlist` of every citizen with an acknowledged join, read
    /// before the clinics (see [`fetch_waitlists`]).
    #[serde(default)]
    pub waitlists: BTreeMap<String, Vec<WaitlistEntry>>,
}

/// One waiting entry of a citizen's waitlist listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistEntry {
    pub waitlist_id: String,
    pub clinic_id: String,
    pub slot_id: String,
    #[serde(default)]
    pub position: i64,
}

#[derive(Deserialize)]
struct WaitlistListing {
    entries: Vec<WaitlistEntry>,
}

/// One clinic, read consistently: its availability did not change while its appointments
/// were listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClinicPicture {
    pub clinic_id: String,
    /// `GET /v1/clinics/{id}/availability` without filters: every slot and vaccine.
    pub availability: Availability,
    /// `GET /v1/clinics/{id}/appointments` (authority), complete.
    pub appointments: Vec<Appointment>,
}

/// The body of `GET /v1/clinics/{id}/availability`, the fields the checker uses.
///
/// Counters are read as `i64` although the server sends unsigned numbers, so a negative
/// counter from a broken server is reported as a violation instead of failing the read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub clinic_id: String,
    /// Per vaccine.
    pub stock: BTreeMap<String, StockLevel>,
    pub slots: Vec<SlotState>,
}

/// One vaccine's stock at a clinic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// One slot's seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot_id: String,
    /// RFC 3339, when the slot ends (for the no-show check); kept as text so a bad time
    /// does not fail the read.
    #[serde(default)]
    pub end: Option<String>,
    pub capacity: i64,
    pub remaining: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub administered: i64,
    pub no_show: i64,
    pub cancelled: bool,
}

/// One appointment of a clinic listing, the fields the checker uses.
///
/// `status` stays a string and `expires_at` stays text so an unknown status or a bad time
/// is a violation the report names, not a failed read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub appointment_id: String,
    pub status: String,
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
    /// RFC 3339; set while PENDING.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The batch the dose came from; set once ADMINISTERED.
    #[serde(default)]
    pub batch: Option<String>,
    /// Made by a waitlist offer.
    #[serde(default)]
    pub offered_from_waitlist: bool,
}

#[derive(Deserialize)]
struct Listing {
    appointments: Vec<Appointment>,
}

// ---- the report ------------------------------------------------------------------------

/// What to check beyond the invariants the server already promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// At most one PENDING or CONFIRMED appointment per citizen across the picture (on by
    /// default: the server enforces the citizen rule).
    pub one_active_per_citizen: bool,
    /// How long past its `expires_at` a hold may still be PENDING before that counts as
    /// "expiry did not run": expiry is a timer, and the harness's clock is not the server's.
    /// The same slack applies to no-shows.
    pub expiry_slack: Duration,
    /// The server's `--no-show-grace`, when known: a CONFIRMED appointment whose slot ended
    /// more than this (plus the slack) before the picture should be NO_SHOW. `None` skips
    /// the no-show checks.
    pub no_show_grace: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            one_active_per_citizen: true,
            expiry_slack: Duration::from_secs(2),
            no_show_grace: None,
        }
    }
}

/// What a violation is about. The declaration order is the report's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// A slot that is not cancelled whose `remaining + pending + confirmed + administered +
    /// no_show` is not its `capacity`. Ids: clinic, slot.
    SlotCountersMismatch,
    /// A slot counter (or the capacity) below zero. Ids: clinic, slot.
    NegativeCounter,
    /// A cancelled slot with remaining, pending or confirmed seats. Ids: clinic, slot.
    CancelledSlotNotEmpty,
    /// More PENDING, CONFIRMED, ADMINISTERED and NO_SHOW appointments in a slot than seats.
    /// Ids: clinic, slot, then the appointments.
    Oversell,
    /// A slot's `pending`, `confirmed`, `administered` or `no_show` differs from the
    /// appointments listed in that status. Ids: clinic, slot.
    SlotCountMismatch,
    /// `reserved` differs from the clinic's PENDING and CONFIRMED appointments of the
    /// vaccine. Ids: clinic, vaccine.
    ReservedMismatch,
    /// `available != on_hand - reserved`. Ids: clinic, vaccine.
    AvailableMismatch,
    /// `on_hand < 0`. Ids: clinic, vaccine.
    NegativeStock,
    /// `on_hand` is not the doses the ledger says the clinic received minus its ADMINISTERED
    /// appointments of the vaccine (or the received vaccine has no stock entry). Ids:
    /// clinic, vaccine.
    StockMismatch,
    /// An acknowledged appointment the picture does not have (or whose clinic it lacks).
    /// Ids: appointment, clinic, slot, citizen (as acknowledged).
    AckedLost,
    /// An acknowledged appointment whose status went backwards or sideways from the
    /// acknowledged one. Ids: appointment, clinic, slot, citizen.
    AckedRegressed,
    /// An acknowledged appointment now with another clinic, slot, citizen or vaccine.
    /// Ids: appointment, clinic, slot, citizen (as acknowledged).
    AckedMismatch,
    /// An Idempotency-Key replay answered with another status or appointment than the
    /// first request. Ids: idempotency key, citizen, first appointment, replay appointment.
    ReplayMismatch,
    /// A citizen with more than one PENDING or CONFIRMED appointment (only with
    /// [`CheckOptions::one_active_per_citizen`]). Ids: citizen, then the appointments.
    CitizenDoubleBooked,
    /// A PENDING appointment whose hold ended more than [`CheckOptions::expiry_slack`]
    /// before the picture was taken. Ids: appointment, clinic, slot, citizen.
    ExpiryOverdue,
    /// A CONFIRMED appointment whose slot ended more than the no-show grace plus
    /// [`CheckOptions::expiry_slack`] before the picture: the no-show did not happen. Ids:
    /// appointment, clinic, slot, citizen.
    NoShowOverdue,
    /// An appointment the harness confirmed and left alone to fall due as a no-show (see
    /// [`Ledger::record_no_show_expected`]) in a status other than CONFIRMED, NO_SHOW or
    /// ADMINISTERED. Ids: appointment, clinic, slot, citizen.
    NoShowMissed,
    /// An appointment status that is not in the contract. Ids: appointment, clinic, slot,
    /// citizen.
    UnknownStatus,
    /// An appointment whose slot is not in its clinic's availability. Ids: appointment,
    /// clinic, slot, citizen.
    UnknownSlot,
    /// An acknowledged slot cancellation the picture does not honour: the slot is missing
    /// or not cancelled, or its CLINIC_CANCELLED appointments are not exactly those the
    /// answer listed. Ids: clinic, slot, then the appointment involved (if one is).
    SlotCancelNotHonoured,
    /// An acknowledged waitlist join that is neither waiting in its citizen's listing, nor
    /// served (an appointment of that citizen in that slot offered from the waitlist), nor
    /// gone with its cancelled slot. Ids: waitlist entry, clinic, slot, citizen.
    WaitlistEntryLost,
    /// The picture contradicts itself: an id listed twice, an appointment listed under
    /// another clinic, a PENDING without a readable `expires_at`, an availability answer
    /// for another clinic. Ids: what is involved.
    MalformedPicture,
    /// Not a finding itself: how many violations of one kind were not listed (see
    /// [`VIOLATIONS_PER_KIND_MAX`]). Ids: none.
    Truncated,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 23] = [
        ViolationKind::SlotCountersMismatch,
        ViolationKind::NegativeCounter,
        ViolationKind::CancelledSlotNotEmpty,
        ViolationKind::Oversell,
        ViolationKind::SlotCountMismatch,
        ViolationKind::ReservedMismatch,
        ViolationKind::AvailableMismatch,
        ViolationKind::NegativeStock,
        ViolationKind::StockMismatch,
        ViolationKind::AckedLost,
        ViolationKind::AckedRegressed,
        ViolationKind::AckedMismatch,
        ViolationKind::ReplayMismatch,
        ViolationKind::CitizenDoubleBooked,
        ViolationKind::ExpiryOverdue,
        ViolationKind::NoShowOverdue,
        ViolationKind::NoShowMissed,
        ViolationKind::UnknownStatus,
        ViolationKind::UnknownSlot,
        ViolationKind::SlotCancelNotHonoured,
        ViolationKind::WaitlistEntryLost,
        ViolationKind::MalformedPicture,
        ViolationKind::Truncated,
    ];

    /// The name the JSON report uses (`slot_counters_mismatch`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::SlotCountersMismatch => "slot_counters_mismatch",
            ViolationKind::NegativeCounter => "negative_counter",
            ViolationKind::CancelledSlotNotEmpty => "cancelled_slot_not_empty",
            ViolationKind::Oversell => "oversell",
            ViolationKind::SlotCountMismatch => "slot_count_mismatch",
            ViolationKind::ReservedMismatch => "reserved_mismatch",
            ViolationKind::AvailableMismatch => "available_mismatch",
            ViolationKind::NegativeStock => "negative_stock",
            ViolationKind::StockMismatch => "stock_mismatch",
            ViolationKind::AckedLost => "acked_lost",
            ViolationKind::AckedRegressed => "acked_regressed",
            ViolationKind::AckedMismatch => "acked_mismatch",
            ViolationKind::ReplayMismatch => "replay_mismatch",
            ViolationKind::CitizenDoubleBooked => "citizen_double_booked",
            ViolationKind::ExpiryOverdue => "expiry_overdue",
            ViolationKind::NoShowOverdue => "no_show_overdue",
            ViolationKind::NoShowMissed => "no_show_missed",
            ViolationKind::UnknownStatus => "unknown_status",
            ViolationKind::UnknownSlot => "unknown_slot",
            ViolationKind::SlotCancelNotHonoured => "slot_cancel_not_honoured",
            ViolationKind::WaitlistEntryLost => "waitlist_entry_lost",
            ViolationKind::MalformedPicture => "malformed_picture",
            ViolationKind::Truncated => "truncated",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    /// The clinic, slot, appointment, citizen (or vaccine, idempotency key) ids involved,
    /// in the order the kind documents; at most [`IDS_PER_VIOLATION_MAX`].
    pub ids: Vec<String>,
    pub message: String,
}

/// What [`check`] found, and how much it looked at.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// Sorted by kind, then ids, then message; at most [`VIOLATIONS_PER_KIND_MAX`] per kind,
    /// then one [`ViolationKind::Truncated`] entry per kind that had more.
    pub violations: Vec<Violation>,
    /// Every violation found, listed or not ([`ViolationKind::Truncated`] entries excluded).
    pub violations_total: usize,
    /// Violations found per kind, listed or not.
    pub violations_by_kind: BTreeMap<ViolationKind, usize>,
    pub taken_at: DateTime<Utc>,
    pub clinics: usize,
    pub slots: usize,
    /// Distinct appointments in the picture.
    pub appointments: usize,
    /// Appointments of the picture per status (unknown statuses included as they came).
    pub appointments_by_status: BTreeMap<String, usize>,
    /// Ledger entries (acknowledged appointments) checked.
    pub acked_checked: usize,
    pub replays_checked: usize,
    /// Acknowledged slot cancellations checked.
    pub slot_cancellations_checked: usize,
    /// (clinic, vaccine) pairs whose `on_hand` was checked against the doses received.
    pub stock_checked: usize,
    /// Appointments left to fall due as no-shows, checked.
    pub no_show_expected_checked: usize,
    /// Acknowledged waitlist joins checked, and of those: still waiting, served by an offer.
    pub waitlist_checked: usize,
    pub waitlist_waiting: usize,
    pub waitlist_served: usize,
}

impl CheckReport {
    /// No violation at all.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The listed violations of one kind (tests and summaries).
    pub fn of_kind(&self, kind: ViolationKind) -> Vec<&Violation> {
        self.violations.iter().filter(|v| v.kind == kind).collect()
    }
}

// ---- taking the picture ----------------------------------------------------------------

/// Reads `clinic_ids` (duplicates read once, order kept) from the server `client` talks to.
///
/// Availability is public; the appointment listings need an authority token
/// (`authority_token`, bare or with a `Bearer ` prefix). Clinics are read
/// [`FETCH_CONCURRENCY`] at a time. A clinic's picture must be consistent even if holds
/// expire while it is read, so each clinic is read as availability, appointments,
/// availability again, and read anew (up to [`FETCH_ATTEMPTS`] times) when the two
/// availability answers differ: every change of a seat or a dose shows in them. Any answer
/// other than 200, an unexpected body, a transport error or timeout
/// ([`REQUEST_TIMEOUT`]) or a clinic that never holds still is an `Err` naming the clinic.
pub async fn fetch_picture(
    client: &Http,
    authority_token: &str,
    clinic_ids: &[String],
) -> Result<Picture, String> {
    let taken_at = Utc::now();
    let mut seen = HashSet::new();
    let ids: Vec<String> = clinic_ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    if let Some(bad) = ids.iter().find(|id| !is_client_id(id)) {
        return Err(format!(
            "{bad:?} is not a clinic id (1-64 characters of [A-Za-z0-9_-])"
        ));
    }
    let reader = Arc::new(Reader::new(client, authority_token));
    let mut pictures: Vec<Option<ClinicPicture>> = ids.iter().map(|_| None).collect();
    let mut tasks = JoinSet::new();
    let mut next = 0;
    loop {
        while next < ids.len() && tasks.len() < FETCH_CONCURRENCY {
            let reader = Arc::clone(&reader);
            let clinic_id = ids[next].clone();
            let index = next;
            tasks.spawn(async move { (index, reader.clinic(clinic_id).await) });
            next += 1;
        }
        // Returning early drops `tasks`, which aborts the reads still in flight.
        match tasks.join_next().await {
            None => break,
            Some(Ok((index, Ok(picture)))) => pictures[index] = Some(picture),
            Some(Ok((_, Err(e)))) => return Err(e),
            Some(Err(e)) => return Err(format!("a clinic read failed: {e}")),
        }
    }
    let clinics = pictures
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "a clinic read ended without a picture".to_string())?;
    Ok(Picture {
        taken_at,
        clinics,
        waitlists: BTreeMap::new(),
    })
}

/// The waitlist listing of every citizen in `citizen_ids`. Read **before** the clinics'
/// [`fetch_picture`]: an entry served after its listing was read was listed, and one served
/// before has its offered appointment in the clinic read after (appointments never
/// disappear), so no entry can slip between the two reads.
pub async fn fetch_waitlists(
    client: &Http,
    authority_token: &str,
    citizen_ids: &[String],
) -> Result<BTreeMap<String, Vec<WaitlistEntry>>, String> {
    if let Some(bad) = citizen_ids.iter().find(|id| !is_client_id(id)) {
        return Err(format!("{bad:?} is not a citizen id"));
    }
    let reader = Arc::new(Reader::new(client, authority_token));
    let mut out = BTreeMap::new();
    for chunk in citizen_ids.chunks(FETCH_CONCURRENCY) {
        let mut tasks = JoinSet::new();
        for citizen in chunk {
            let (reader, citizen) = (Arc::clone(&reader), citizen.clone());
            tasks.spawn(async move {
                let path = format!("/v1/citizens/{citizen}/waitlist");
                let listing: Result<WaitlistListing, String> = reader.get(&path, &[], true).await;
                (citizen, listing)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (citizen, listing) = done.map_err(|e| format!("a waitlist read failed: {e}"))?;
            out.insert(citizen, listing?.entries);
        }
    }
    Ok(out)
}

/// `[A-Za-z0-9_-]{1,64}`, the contract's client id, so an id is safe in a URL path.
fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

struct Reader {
    client: Http,
    /// `Bearer <the authority's token>`.
    authorization: String,
}

impl Reader {
    /// A reader as the authority (`authority_token` with or without its `Bearer `).
    fn new(client: &Http, authority_token: &str) -> Reader {
        let token = authority_token
            .strip_prefix("Bearer ")
            .unwrap_or(authority_token);
        Reader {
            client: client.clone(),
            authorization: format!("Bearer {token}"),
        }
    }

    /// One clinic, consistent (see [`fetch_picture`]).
    async fn clinic(&self, clinic_id: String) -> Result<ClinicPicture, String> {
        for attempt in 1..=FETCH_ATTEMPTS {
            let before = self.availability(&clinic_id).await?;
            let appointments = self.appointments(&clinic_id, &before).await?;
            let after = self.availability(&clinic_id).await?;
            if before == after {
                return Ok(ClinicPicture {
                    clinic_id,
                    availability: after,
                    appointments,
                });
            }
            if attempt < FETCH_ATTEMPTS {
                tokio::time::sleep(FETCH_RETRY_PAUSE * attempt).await;
            }
        }
        Err(format!(
            "clinic {clinic_id}: its availability changed while its appointments were read, \
             {FETCH_ATTEMPTS} times in a row (is something still booking, or expiring?)"
        ))
    }

    async fn availability(&self, clinic_id: &str) -> Result<Availability, String> {
        self.get(&format!("/v1/clinics/{clinic_id}/availability"), &[], false)
            .await
    }

    /// Every appointment of the clinic. A listing as long as [`LISTING_CAP`] may have been
    /// cut, so the clinic is listed again per slot of `availability`, and a slot whose
    /// listing is that long again per status; a slot and status with that many is an
    /// error (the server offers no way to read the rest).
    async fn appointments(
        &self,
        clinic_id: &str,
        availability: &Availability,
    ) -> Result<Vec<Appointment>, String> {
        let path = format!("/v1/clinics/{clinic_id}/appointments");
        let all: Listing = self.get(&path, &[], true).await?;
        if all.appointments.len() < LISTING_CAP {
            return Ok(all.appointments);
        }
        let mut appointments = Vec::new();
        for slot in &availability.slots {
            let query = [("slot_id", slot.slot_id.as_str())];
            let of_slot: Listing = self.get(&path, &query, true).await?;
            if of_slot.appointments.len() < LISTING_CAP {
                appointments.extend(of_slot.appointments);
                continue;
            }
            for status in STATUSES {
                let query = [("slot_id", slot.slot_id.as_str()), ("status", status)];
                let part: Listing = self.get(&path, &query, true).await?;
                if part.appointments.len() >= LISTING_CAP {
                    return Err(format!(
                        "clinic {clinic_id}: slot {} has {LISTING_CAP} or more {status} \
                         appointments, the server's listing cap: the picture cannot be complete",
                        slot.slot_id
                    ));
                }
                appointments.extend(part.appointments);
            }
        }
        Ok(appointments)
    }

    /// GET `path` (with `query`), 200 and a JSON body of type `T`, else an error that names
    /// the request and quotes the answer.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        authorized: bool,
    ) -> Result<T, String> {
        let target = if query.is_empty() {
            path.to_string()
        } else {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
                .collect();
            format!("{path}?{}", pairs.join("&"))
        };
        let what = format!("GET {target}");
        let mut request = Req::get(&target);
        if authorized {
            request = request.auth(&self.authorization);
        }
        let answer = self
            .client
            .request(&request, REQUEST_TIMEOUT)
            .await
            .map_err(|e| match e {
                Failure::Timeout(e) | Failure::Transport(e) => format!("{what}: {e}"),
            })?;
        let body = String::from_utf8_lossy(&answer.body);
        if answer.status != 200 {
            return Err(format!("{what}: {}: {}", answer.status, excerpt(&body)));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{what}: unexpected body ({e}): {}", excerpt(&body)))
    }
}

/// A query value as sent: the unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn excerpt(body: &str) -> String {
    let mut chars = body.chars();
    let head: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
}

// ---- checking --------------------------------------------------------------------------

/// Checks `picture` and `ledger` (see the module documentation for what). Pure: no I/O, no
/// clock (the picture's `taken_at` stands for "now"), and no panic whatever the picture
/// holds.
pub fn check(picture: &Picture, ledger: &Ledger, options: &CheckOptions) -> CheckReport {
    let mut found = Vec::new();
    let index = Index::build(picture, &mut found);
    check_appointments(picture, &index, options, &mut found);
    check_slots(&index, &mut found);
    check_stock(&index, &mut found);
    if options.one_active_per_citizen {
        check_citizens(&index, &mut found);
    }
    let acked = ledger.acked();
    for entry in &acked {
        check_acked(entry, &index, &mut found);
    }
    let replays = ledger.replays();
    for replay in &replays {
        check_replay(replay, &mut found);
    }
    let cancellations = ledger.slot_cancels();
    for cancel in &cancellations {
        check_slot_cancel(cancel, &index, &mut found);
    }
    let joins = ledger.waitlist_joins();
    let (mut waitlist_waiting, mut waitlist_served) = (0, 0);
    for join in &joins {
        match check_waitlist_join(join, picture, &index, &mut found) {
            Some(WaitlistFate::Waiting) => waitlist_waiting += 1,
            Some(WaitlistFate::Served) => waitlist_served += 1,
            _ => {}
        }
    }
    let received = ledger.received();
    let stock_checked = check_received_stock(&received, &index, &mut found);
    let no_show_expected = ledger.no_show_expected();
    if let Some(grace) = options.no_show_grace {
        let due = NoShowDue::new(picture.taken_at, grace, options.expiry_slack);
        check_no_shows(&index, &due, &no_show_expected, &mut found);
    }

    let mut appointments_by_status = BTreeMap::new();
    for (_, a) in index.appointments.values() {
        *appointments_by_status.entry(a.status.clone()).or_insert(0) += 1;
    }
    let (violations, violations_by_kind) = sort_and_cap(found);
    CheckReport {
        violations_total: violations_by_kind.values().sum(),
        violations,
        violations_by_kind,
        taken_at: picture.taken_at,
        clinics: index.clinics.len(),
        slots: index.clinics.values().map(|c| c.slots.len()).sum(),
        appointments: index.appointments.len(),
        appointments_by_status,
        acked_checked: acked.len(),
        replays_checked: replays.len(),
        slot_cancellations_checked: cancellations.len(),
        stock_checked,
        no_show_expected_checked: if options.no_show_grace.is_some() {
            no_show_expected.len()
        } else {
            0
        },
        waitlist_checked: joins.len(),
        waitlist_waiting,
        waitlist_served,
    }
}

/// Where an acknowledged waitlist join is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitlistFate {
    Waiting,
    Served,
    SlotCancelled,
}

/// An acknowledged join is waiting, served or gone with its cancelled slot; anything else
/// is a [`ViolationKind::WaitlistEntryLost`] (`None`).
fn check_waitlist_join(
    join: &WaitlistJoin,
    picture: &Picture,
    index: &Index<'_>,
    found: &mut Vec<Violation>,
) -> Option<WaitlistFate> {
    let (clinic_id, slot_id) = (join.clinic_id.as_str(), join.slot_id.as_str());
    let listed = picture
        .waitlists
        .get(&join.citizen_id)
        .is_some_and(|entries| entries.iter().any(|e| e.waitlist_id == join.waitlist_id));
    if listed {
        return Some(WaitlistFate::Waiting);
    }
    let clinic = index.clinics.get(clinic_id);
    let served = clinic
        .and_then(|c| c.by_slot.get(slot_id))
        .into_iter()
        .flat_map(|by_status| by_status.values().flatten())
        .any(|a| a.citizen_id == join.citizen_id && a.offered_from_waitlist);
    if served {
        return Some(WaitlistFate::Served);
    }
    if clinic
        .and_then(|c| c.slots.get(slot_id))
        .is_some_and(|slot| slot.cancelled)
    {
        return Some(WaitlistFate::SlotCancelled);
    }
    found.push(violation(
        ViolationKind::WaitlistEntryLost,
        [
            join.waitlist_id.as_str(),
            clinic_id,
            slot_id,
            join.citizen_id.as_str(),
        ],
        format!(
            "acknowledged waitlist entry {} of citizen {} for slot {clinic_id}/{slot_id} is \
             neither waiting, nor served by an offer, nor gone with a cancelled slot",
            join.waitlist_id, join.citizen_id
        ),
    ));
    None
}

/// The picture, indexed; the first occurrence of a duplicated id wins (the duplicate is a
/// [`ViolationKind::MalformedPicture`]).
struct Index<'p> {
    clinics: BTreeMap<&'p str, ClinicIndex<'p>>,
    /// Appointment id to (the clinic whose listing holds it, the appointment).
    appointments: BTreeMap<&'p str, (&'p str, &'p Appointment)>,
}

struct ClinicIndex<'p> {
    clinic: &'p ClinicPicture,
    slots: BTreeMap<&'p str, &'p SlotState>,
    /// Per slot and status, the appointments listed (slot ids the availability lacks too).
    by_slot: BTreeMap<&'p str, BTreeMap<&'p str, Vec<&'p Appointment>>>,
}

impl<'p> Index<'p> {
    fn build(picture: &'p Picture, found: &mut Vec<Violation>) -> Index<'p> {
        let mut clinics = BTreeMap::new();
        for clinic in &picture.clinics {
            let id = clinic.clinic_id.as_str();
            if clinics.contains_key(id) {
                found.push(violation(
                    ViolationKind::MalformedPicture,
                    [id],
                    format!("clinic {id} appears twice in the picture; the first is checked"),
                ));
                continue;
            }
            if clinic.availability.clinic_id != clinic.clinic_id {
                found.push(violation(
                    ViolationKind::MalformedPicture,
                    [id, clinic.availability.clinic_id.as_str()],
                    format!(
                        "the availability read for clinic {id} is for clinic {}",
                        clinic.availability.clinic_id
                    ),
                ));
            }
            let mut slots = BTreeMap::new();
            for slot in &clinic.availability.slots {
                if slots.insert(slot.slot_id.as_str(), slot).is_some() {
                    found.push(violation(
                        ViolationKind::MalformedPicture,
                        [id, slot.slot_id.as_str()],
                        format!(
                            "slot {} appears twice in the availability of clinic {id}",
                            slot.slot_id
                        ),
                    ));
                }
            }
            clinics.insert(
                id,
                ClinicIndex {
                    clinic,
                    slots,
                    by_slot: BTreeMap::new(),
                },
            );
        }

        let mut appointments: BTreeMap<&str, (&str, &Appointment)> = BTreeMap::new();
        for (listed_in, entry) in clinics.iter_mut() {
            for a in &entry.clinic.appointments {
                if let Some((first_clinic, _)) = appointments.get(a.appointment_id.as_str()) {
                    found.push(violation(
                        ViolationKind::MalformedPicture,
                        [a.appointment_id.as_str(), first_clinic, listed_in],
                        format!(
                            "appointment {} is listed twice (clinics {first_clinic} and \
                             {listed_in}); the first is checked",
                            a.appointment_id
                        ),
                    ));
                    continue;
                }
                appointments.insert(a.appointment_id.as_str(), (*listed_in, a));
                entry
                    .by_slot
                    .entry(a.slot_id.as_str())
                    .or_default()
                    .entry(a.status.as_str())
                    .or_default()
                    .push(a);
            }
        }
        Index {
            clinics,
            appointments,
        }
    }
}

/// Per appointment: status known, slot known, listed under its own clinic, hold expired
/// in time.
fn check_appointments(
    picture: &Picture,
    index: &Index<'_>,
    options: &CheckOptions,
    found: &mut Vec<Violation>,
) {
    // `taken_at - slack`; none (no expiry check) when the slack is beyond chrono's time
    // range, so an absurd slack means "never overdue" rather than a panic.
    let deadline = chrono::Duration::from_std(options.expiry_slack)
        .ok()
        .and_then(|slack| picture.taken_at.checked_sub_signed(slack));
    for (listed_in, a) in index.appointments.values() {
        let ids = appointment_ids(a);
        if a.clinic_id != *listed_in {
            found.push(violation(
                ViolationKind::MalformedPicture,
                ids.clone(),
                format!(
                    "appointment {} of clinic {} is listed by clinic {listed_in}",
                    a.appointment_id, a.clinic_id
                ),
            ));
        }
        if !STATUSES.contains(&a.status.as_str()) {
            found.push(violation(
                ViolationKind::UnknownStatus,
                ids.clone(),
                format!(
                    "appointment {} has status {:?}, which is not in the contract",
                    a.appointment_id, a.status
                ),
            ));
        }
        let slot_known = index
            .clinics
            .get(listed_in)
            .is_some_and(|c| c.slots.contains_key(a.slot_id.as_str()));
        if !slot_known {
            found.push(violation(
                ViolationKind::UnknownSlot,
                ids.clone(),
                format!(
                    "appointment {} is for slot {}, which clinic {listed_in}'s availability \
                     does not have",
                    a.appointment_id, a.slot_id
                ),
            ));
        }
        if a.status == "PENDING" {
            check_hold(a, ids, deadline, picture.taken_at, found);
        }
    }
}

/// A PENDING appointment must say until when, and that must not be long gone.
fn check_hold(
    a: &Appointment,
    ids: Vec<String>,
    deadline: Option<DateTime<Utc>>,
    taken_at: DateTime<Utc>,
    found: &mut Vec<Violation>,
) {
    let Some(text) = &a.expires_at else {
        found.push(violation(
            ViolationKind::MalformedPicture,
            ids,
            format!(
                "appointment {} is PENDING without expires_at",
                a.appointment_id
            ),
        ));
        return;
    };
    let expires_at = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => {
            found.push(violation(
                ViolationKind::MalformedPicture,
                ids,
                format!(
                    "appointment {} has expires_at {text:?}, not an RFC 3339 time ({e})",
                    a.appointment_id
                ),
            ));
            return;
        }
    };
    if deadline.is_some_and(|deadline| expires_at < deadline) {
        let late_ms = (taken_at - expires_at).num_milliseconds();
        found.push(violation(
            ViolationKind::ExpiryOverdue,
            ids,
            format!(
                "appointment {} is still PENDING {late_ms} ms after its hold ended at {text} \
                 (picture taken at {}): expiry did not run",
                a.appointment_id,
                taken_at.to_rfc3339()
            ),
        ));
    }
}

/// Per slot: counters add up and are not negative; no oversell; counters match the
/// appointments listed.
fn check_slots(index: &Index<'_>, found: &mut Vec<Violation>) {
    let empty = BTreeMap::new();
    for (clinic_id, clinic) in &index.clinics {
        for (slot_id, slot) in &clinic.slots {
            let ids = || vec![clinic_id.to_string(), slot_id.to_string()];
            let where_ = format!("slot {slot_id} of clinic {clinic_id}");
            let counters = [
                ("capacity", slot.capacity),
                ("remaining", slot.remaining),
                ("pending", slot.pending),
                ("confirmed", slot.confirmed),
                ("administered", slot.administered),
                ("no_show", slot.no_show),
            ];
            let negative: Vec<String> = counters
                .iter()
                .filter(|(_, n)| *n < 0)
                .map(|(name, n)| format!("{name} = {n}"))
                .collect();
            if !negative.is_empty() {
                found.push(violation(
                    ViolationKind::NegativeCounter,
                    ids(),
                    format!("{where_} has negative counters: {}", negative.join(", ")),
                ));
            }
            if slot.cancelled {
                if (slot.remaining, slot.pending, slot.confirmed) != (0, 0, 0) {
                    found.push(violation(
                        ViolationKind::CancelledSlotNotEmpty,
                        ids(),
                        format!(
                            "{where_} is cancelled but has remaining {}, pending {}, \
                             confirmed {} (all must be 0)",
                            slot.remaining, slot.pending, slot.confirmed
                        ),
                    ));
                }
            } else {
                // i128: no overflow whatever the server sent.
                let sum: i128 = counters[1..].iter().map(|(_, n)| i128::from(*n)).sum();
                if sum != i128::from(slot.capacity) {
                    found.push(violation(
                        ViolationKind::SlotCountersMismatch,
                        ids(),
                        format!(
                            "{where_}: remaining {} + pending {} + confirmed {} + administered \
                             {} + no_show {} = {sum}, but capacity is {}",
                            slot.remaining,
                            slot.pending,
                            slot.confirmed,
                            slot.administered,
                            slot.no_show,
                            slot.capacity
                        ),
                    ));
                }
            }

            let listed = clinic.by_slot.get(slot_id).unwrap_or(&empty);
            let in_status = |status: &str| listed.get(status).map_or(0, Vec::len);
            let holders: Vec<&Appointment> = SEAT_STATUSES
                .iter()
                .filter_map(|s| listed.get(s))
                .flatten()
                .copied()
                .collect();
            if i128::try_from(holders.len()).unwrap_or(i128::MAX) > i128::from(slot.capacity) {
                let mut holder_ids: Vec<&str> =
                    holders.iter().map(|a| a.appointment_id.as_str()).collect();
                holder_ids.sort_unstable();
                found.push(violation(
                    ViolationKind::Oversell,
                    ids()
                        .into_iter()
                        .chain(holder_ids.iter().map(|id| id.to_string())),
                    format!(
                        "{where_} has {} appointments holding or using a seat (PENDING, \
                         CONFIRMED, ADMINISTERED, NO_SHOW) for {} seats",
                        holders.len(),
                        slot.capacity
                    ),
                ));
            }
            let differing: Vec<String> = [
                ("pending", slot.pending, "PENDING"),
                ("confirmed", slot.confirmed, "CONFIRMED"),
                ("administered", slot.administered, "ADMINISTERED"),
                ("no_show", slot.no_show, "NO_SHOW"),
            ]
            .iter()
            .filter(|(_, counter, status)| i64::try_from(in_status(status)).ok() != Some(*counter))
            .map(|(name, counter, status)| {
                format!("{name} = {counter} but {} {status}", in_status(status))
            })
            .collect();
            if !differing.is_empty() {
                found.push(violation(
                    ViolationKind::SlotCountMismatch,
                    ids(),
                    format!(
                        "{where_}: counters differ from the appointments listed: {}",
                        differing.join(", ")
                    ),
                ));
            }
        }
    }
}

/// Per clinic and vaccine: `reserved` is the active appointments, `available` is
/// `on_hand - reserved`, `on_hand` is not negative.
fn check_stock(index: &Index<'_>, found: &mut Vec<Violation>) {
    for (clinic_id, clinic) in &index.clinics {
        let mut active: BTreeMap<&str, usize> = BTreeMap::new();
        for statuses in clinic.by_slot.values() {
            for a in ACTIVE_STATUSES
                .iter()
                .filter_map(|s| statuses.get(s))
                .flatten()
            {
                *active.entry(a.vaccine.as_str()).or_insert(0) += 1;
            }
        }
        let stock = &clinic.clinic.availability.stock;
        for (vaccine, level) in stock {
            let ids = || vec![clinic_id.to_string(), vaccine.clone()];
            let where_ = format!("vaccine {vaccine} at clinic {clinic_id}");
            if level.on_hand < 0 {
                found.push(violation(
                    ViolationKind::NegativeStock,
                    ids(),
                    format!("{where_} has on_hand {}", level.on_hand),
                ));
            }
            if i128::from(level.available) != i128::from(level.on_hand) - i128::from(level.reserved)
            {
                found.push(violation(
                    ViolationKind::AvailableMismatch,
                    ids(),
                    format!(
                        "{where_}: available {} is not on_hand {} - reserved {}",
                        level.available, level.on_hand, level.reserved
                    ),
                ));
            }
            let holding = active.get(vaccine.as_str()).copied().unwrap_or(0);
            if i64::try_from(holding).ok() != Some(level.reserved) {
                found.push(violation(
                    ViolationKind::ReservedMismatch,
                    ids(),
                    format!(
                        "{where_}: reserved {} but {holding} PENDING or CONFIRMED appointments",
                        level.reserved
                    ),
                ));
            }
        }
        for (vaccine, holding) in &active {
            if !stock.contains_key(*vaccine) {
                found.push(violation(
                    ViolationKind::ReservedMismatch,
                    [*clinic_id, *vaccine],
                    format!(
                        "vaccine {vaccine} at clinic {clinic_id}: no stock entry (reserved 0) \
                         but {holding} PENDING or CONFIRMED appointments"
                    ),
                ));
            }
        }
    }
}

/// At most one PENDING or CONFIRMED appointment per citizen, across the picture.
fn check_citizens(index: &Index<'_>, found: &mut Vec<Violation>) {
    let mut active: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, a) in index.appointments.values() {
        if ACTIVE_STATUSES.contains(&a.status.as_str()) {
            active
                .entry(a.citizen_id.as_str())
                .or_default()
                .push(a.appointment_id.as_str());
        }
    }
    for (citizen, ids) in active.into_iter().filter(|(_, ids)| ids.len() > 1) {
        let count = ids.len();
        found.push(violation(
            ViolationKind::CitizenDoubleBooked,
            std::iter::once(citizen).chain(ids),
            format!("citizen {citizen} has {count} PENDING or CONFIRMED appointments"),
        ));
    }
}

/// An acknowledged appointment is still there, at least as far as acknowledged, unchanged.
fn check_acked(entry: &Acked, index: &Index<'_>, found: &mut Vec<Violation>) {
    let ids = || {
        vec![
            entry.appointment_id.clone(),
            entry.clinic_id.clone(),
            entry.slot_id.clone(),
            entry.citizen_id.clone(),
        ]
    };
    let what = format!(
        "acknowledged {} of appointment {} ({})",
        ack_name(entry.kind),
        entry.appointment_id,
        entry.status
    );
    if !index.clinics.contains_key(entry.clinic_id.as_str()) {
        found.push(violation(
            ViolationKind::AckedLost,
            ids(),
            format!(
                "{what}: its clinic {:?} is not in the picture",
                entry.clinic_id
            ),
        ));
        return;
    }
    let Some((listed_in, now)) = index.appointments.get(entry.appointment_id.as_str()) else {
        found.push(violation(
            ViolationKind::AckedLost,
            ids(),
            format!(
                "{what}: the server no longer has it (clinic {} does not list it)",
                entry.clinic_id
            ),
        ));
        return;
    };
    let mismatches: Vec<String> = [
        ("clinic", entry.clinic_id.as_str(), *listed_in),
        ("slot", entry.slot_id.as_str(), now.slot_id.as_str()),
        (
            "citizen",
            entry.citizen_id.as_str(),
            now.citizen_id.as_str(),
        ),
        ("vaccine", entry.vaccine.as_str(), now.vaccine.as_str()),
    ]
    .iter()
    // An empty field was not in the acknowledgement (a clinic cancellation names ids only).
    .filter(|(_, acked, seen)| !acked.is_empty() && acked != seen)
    .map(|(field, acked, seen)| format!("{field} {acked:?} acknowledged, {seen:?} now"))
    .chain(batch_mismatch(entry, now))
    .collect();
    if !mismatches.is_empty() {
        found.push(violation(
            ViolationKind::AckedMismatch,
            ids(),
            format!("{what}: {}", mismatches.join(", ")),
        ));
    }
    if !status_honours(entry, &now.status) {
        found.push(violation(
            ViolationKind::AckedRegressed,
            ids(),
            format!("{what}: the server now reports {}", now.status),
        ));
    }
}

fn ack_name(kind: AckKind) -> &'static str {
    match kind {
        AckKind::Create => "create",
        AckKind::Confirm => "confirm",
        AckKind::Cancel => "cancel",
        AckKind::Administer => "administration",
    }
}

/// An acknowledged administration's batch is the batch the appointment shows now.
fn batch_mismatch(entry: &Acked, now: &Appointment) -> Option<String> {
    let acked = entry.batch.as_deref()?;
    (now.batch.as_deref() != Some(acked)).then(|| {
        format!(
            "batch {acked:?} acknowledged, {:?} now",
            now.batch.as_deref().unwrap_or("none")
        )
    })
}

/// Whether `now` is at least as far as the acknowledgement: allowed both by the operation
/// (a confirmed appointment is confirmed or later; a cancel's RELEASED or CANCELLED is
/// final) and by the status the answer carried (statuses only move forward, and a final
/// one never changes, so a repeated transition answered with a final status pins it).
fn status_honours(entry: &Acked, now: &str) -> bool {
    let by_kind = match entry.kind {
        AckKind::Create => true,
        AckKind::Confirm => CONFIRMED_OR_LATER.contains(&now),
        AckKind::Cancel => now == entry.status,
        AckKind::Administer => now == "ADMINISTERED",
    };
    let by_status = match entry.status.as_str() {
        "PENDING" => true,
        "CONFIRMED" => CONFIRMED_OR_LATER.contains(&now),
        last => now == last,
    };
    by_kind && by_status
}

/// Per (clinic, vaccine) the ledger received doses for: `on_hand` is what was received
/// minus the ADMINISTERED appointments listed. Returns how many pairs were checked (those
/// whose clinic is in the picture).
fn check_received_stock(
    received: &BTreeMap<(String, String), i64>,
    index: &Index<'_>,
    found: &mut Vec<Violation>,
) -> usize {
    let mut checked = 0;
    for ((clinic_id, vaccine), doses) in received {
        let Some(clinic) = index.clinics.get(clinic_id.as_str()) else {
            continue;
        };
        checked += 1;
        let administered = clinic
            .by_slot
            .values()
            .filter_map(|statuses| statuses.get("ADMINISTERED"))
            .flatten()
            .filter(|a| a.vaccine == *vaccine)
            .count();
        let expected = i128::from(*doses) - administered as i128;
        let ids = [clinic_id.as_str(), vaccine.as_str()];
        let where_ = format!("vaccine {vaccine} at clinic {clinic_id}");
        match clinic.clinic.availability.stock.get(vaccine) {
            None => found.push(violation(
                ViolationKind::StockMismatch,
                ids,
                format!("{where_}: {doses} doses received but no stock entry"),
            )),
            Some(level) if i128::from(level.on_hand) != expected => found.push(violation(
                ViolationKind::StockMismatch,
                ids,
                format!(
                    "{where_}: on_hand {} but {doses} received - {administered} ADMINISTERED \
                     = {expected}",
                    level.on_hand
                ),
            )),
            Some(_) => {}
        }
    }
    checked
}

/// When a slot's no-show falls due: its end plus the grace, called overdue once that is more
/// than the slack before the picture.
struct NoShowDue {
    /// `taken_at - grace - slack`: a slot that ended before this is overdue. `None` when out
    /// of chrono's range (then nothing is overdue).
    ended_before: Option<DateTime<Utc>>,
}

impl NoShowDue {
    fn new(taken_at: DateTime<Utc>, grace: Duration, slack: Duration) -> NoShowDue {
        let ended_before = chrono::Duration::from_std(grace.saturating_add(slack))
            .ok()
            .and_then(|d| taken_at.checked_sub_signed(d));
        NoShowDue { ended_before }
    }

    /// Whether a slot ending at `end` (RFC 3339) is past its no-show; an unreadable or
    /// missing end is not (nothing can be said about it).
    fn overdue(&self, end: Option<&str>) -> bool {
        let end = end.and_then(|e| DateTime::parse_from_rfc3339(e).ok());
        matches!((end, self.ended_before), (Some(end), Some(before)) if end < before)
    }
}

/// No CONFIRMED appointment outlives its slot's no-show; the harness's no-show group is
/// CONFIRMED, NO_SHOW or ADMINISTERED.
fn check_no_shows(
    index: &Index<'_>,
    due: &NoShowDue,
    expected: &[String],
    found: &mut Vec<Violation>,
) {
    for (listed_in, a) in index.appointments.values() {
        if a.status != "CONFIRMED" {
            continue;
        }
        let end = index
            .clinics
            .get(listed_in)
            .and_then(|c| c.slots.get(a.slot_id.as_str()))
            .and_then(|s| s.end.as_deref());
        if due.overdue(end) {
            found.push(violation(
                ViolationKind::NoShowOverdue,
                appointment_ids(a),
                format!(
                    "appointment {} is still CONFIRMED although its slot ended at {} and the \
                     no-show grace has passed: the no-show did not happen",
                    a.appointment_id,
                    end.unwrap_or("?")
                ),
            ));
        }
    }
    for id in expected {
        let Some((_, a)) = index.appointments.get(id.as_str()) else {
            continue; // Reported as lost by the acknowledged checks.
        };
        if !["CONFIRMED", "NO_SHOW", "ADMINISTERED"].contains(&a.status.as_str()) {
            found.push(violation(
                ViolationKind::NoShowMissed,
                appointment_ids(a),
                format!(
                    "appointment {id} was confirmed and left to become a no-show, but the \
                     server reports {}",
                    a.status
                ),
            ));
        }
    }
}

/// An acknowledged slot cancellation holds: the slot is cancelled, and its CLINIC_CANCELLED
/// appointments are exactly those the answer listed (none can join later: a cancelled slot
/// takes no booking, and only PENDING or CONFIRMED ones become CLINIC_CANCELLED).
fn check_slot_cancel(cancel: &SlotCancel, index: &Index<'_>, found: &mut Vec<Violation>) {
    let (clinic_id, slot_id) = (cancel.clinic_id.as_str(), cancel.slot_id.as_str());
    let mut flag = |appointment: Option<&str>, what: String| {
        found.push(violation(
            ViolationKind::SlotCancelNotHonoured,
            [clinic_id, slot_id].into_iter().chain(appointment),
            format!("acknowledged cancellation of slot {clinic_id}/{slot_id}: {what}"),
        ));
    };
    let Some(clinic) = index.clinics.get(clinic_id) else {
        return flag(None, "its clinic is not in the picture".to_string());
    };
    match clinic.slots.get(slot_id) {
        None => {
            return flag(
                None,
                "the slot is not in its clinic's availability".to_string(),
            )
        }
        Some(slot) if !slot.cancelled => flag(None, "the slot is not cancelled".to_string()),
        Some(_) => {}
    }
    let listed: HashSet<&str> = cancel.affected.iter().map(String::as_str).collect();
    for id in &listed {
        match index.appointments.get(id) {
            None => flag(Some(id), format!("affected appointment {id} is gone")),
            Some((_, a)) if a.status != "CLINIC_CANCELLED" || a.slot_id != slot_id => flag(
                Some(id),
                format!(
                    "affected appointment {id} is {} in slot {}",
                    a.status, a.slot_id
                ),
            ),
            Some(_) => {}
        }
    }
    let now_cancelled = clinic
        .by_slot
        .get(slot_id)
        .and_then(|by_status| by_status.get("CLINIC_CANCELLED"))
        .into_iter()
        .flatten();
    for a in now_cancelled {
        if !listed.contains(a.appointment_id.as_str()) {
            flag(
                Some(&a.appointment_id),
                format!(
                    "appointment {} is CLINIC_CANCELLED but the answer did not list it",
                    a.appointment_id
                ),
            );
        }
    }
}

/// A replay gets the first answer: same status, same appointment.
fn check_replay(replay: &Replay, found: &mut Vec<Violation>) {
    if replay.replay_status == replay.first_status
        && replay.replay_appointment_id == replay.first_appointment_id
    {
        return;
    }
    let show = |id: &Option<String>| id.as_deref().unwrap_or("none").to_string();
    let ids = [
        Some(replay.idempotency_key.clone()),
        Some(replay.citizen_id.clone()),
        replay.first_appointment_id.clone(),
        replay.replay_appointment_id.clone(),
    ];
    found.push(violation(
        ViolationKind::ReplayMismatch,
        ids.into_iter().flatten(),
        format!(
            "Idempotency-Key {:?} of citizen {}: first answer {} (appointment {}), replay {} \
             (appointment {})",
            replay.idempotency_key,
            replay.citizen_id,
            replay.first_status,
            show(&replay.first_appointment_id),
            replay.replay_status,
            show(&replay.replay_appointment_id)
        ),
    ));
}

/// An appointment's ids in the order appointment-level kinds document.
fn appointment_ids(a: &Appointment) -> Vec<String> {
    vec![
        a.appointment_id.clone(),
        a.clinic_id.clone(),
        a.slot_id.clone(),
        a.citizen_id.clone(),
    ]
}

/// A violation with at most [`IDS_PER_VIOLATION_MAX`] ids (the message says how many
/// there were when some are left off).
fn violation<I, S>(kind: ViolationKind, ids: I, message: String) -> Violation
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut ids: Vec<String> = ids.into_iter().map(Into::into).collect();
    let mut message = message;
    if ids.len() > IDS_PER_VIOLATION_MAX {
        message.push_str(&format!(
            " ({} ids, the first {IDS_PER_VIOLATION_MAX} listed)",
            ids.len()
        ));
        ids.truncate(IDS_PER_VIOLATION_MAX);
    }
    Violation { kind, ids, message }
}

/// Sorts (kind, ids, message), keeps the first [`VIOLATIONS_PER_KIND_MAX`] of each kind and
/// counts the rest in one [`ViolationKind::Truncated`] entry per kind, at the end (the
/// kind's place in the report order).
fn sort_and_cap(mut found: Vec<Violation>) -> (Vec<Violation>, BTreeMap<ViolationKind, usize>) {
    found.sort_by(|a, b| (a.kind, &a.ids, &a.message).cmp(&(b.kind, &b.ids, &b.message)));
    let mut by_kind: BTreeMap<ViolationKind, usize> = BTreeMap::new();
    let mut listed = Vec::new();
    for v in found {
        let seen = by_kind.entry(v.kind).or_insert(0);
        *seen += 1;
        if *seen <= VIOLATIONS_PER_KIND_MAX {
            listed.push(v);
        }
    }
    for (kind, total) in &by_kind {
        if *total > VIOLATIONS_PER_KIND_MAX {
            listed.push(Violation {
                kind: ViolationKind::Truncated,
                ids: Vec::new(),
                message: format!(
                    "and {} more {} violations (the first {VIOLATIONS_PER_KIND_MAX} are listed)",
                    total - VIOLATIONS_PER_KIND_MAX,
                    kind.name()
                ),
            });
        }
    }
    (listed, by_kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_the_serialised_names() {
        for kind in ViolationKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).expect("a kind serialises"),
                serde_json::Value::String(kind.name().to_string())
            );
        }
    }

    #[test]
    fn the_report_serialises_with_kind_names_as_map_keys() {
        let found = vec![violation(
            ViolationKind::Oversell,
            ["c", "s"],
            "x".to_string(),
        )];
        let (violations, by_kind) = sort_and_cap(found);
        let report = CheckReport {
            violations_total: 1,
            violations,
            violations_by_kind: by_kind,
            taken_at: Utc::now(),
            clinics: 0,
            slots: 0,
            appointments: 0,
            appointments_by_status: BTreeMap::new(),
            acked_checked: 0,
            replays_checked: 0,
            slot_cancellations_checked: 0,
            stock_checked: 0,
            no_show_expected_checked: 0,
            waitlist_checked: 0,
            waitlist_waiting: 0,
            waitlist_served: 0,
        };
        let json = serde_json::to_value(&report).expect("the report serialises");
        assert_eq!(json["violations_by_kind"]["oversell"], 1);
        assert_eq!(json["violations"][0]["kind"], "oversell");
        assert!(!report.ok());
    }

    #[test]
    fn each_kind_keeps_its_first_violations_and_counts_the_rest() {
        let many = (0..VIOLATIONS_PER_KIND_MAX + 7).map(|i| {
            violation(
                ViolationKind::AckedLost,
                [format!("a{i:05}")],
                "lost".to_string(),
            )
        });
        let one = violation(ViolationKind::Oversell, ["c", "s"], "x".to_string());
        let (listed, by_kind) = sort_and_cap(many.chain(std::iter::once(one)).collect());
        assert_eq!(
            by_kind[&ViolationKind::AckedLost],
            VIOLATIONS_PER_KIND_MAX + 7
        );
        assert_eq!(by_kind[&ViolationKind::Oversell], 1);
        assert_eq!(listed.len(), 1 + VIOLATIONS_PER_KIND_MAX + 1);
        // Report order: oversell before acked_lost, the truncation last.
        assert_eq!(listed[0].kind, ViolationKind::Oversell);
        assert_eq!(listed[1].ids, vec!["a00000".to_string()]);
        let last = listed.last().expect("a truncation entry");
        assert_eq!(last.kind, ViolationKind::Truncated);
        assert!(
            last.message.contains("7 more acked_lost"),
            "{}",
            last.message
        );
    }

    #[test]
    fn ids_are_capped_and_the_message_says_how_many_there_were() {
        let v = violation(
            ViolationKind::Oversell,
            (0..IDS_PER_VIOLATION_MAX + 3).map(|i| i.to_string()),
            "oversold".to_string(),
        );
        assert_eq!(v.ids.len(), IDS_PER_VIOLATION_MAX);
        assert!(v
            .message
            .contains(&format!("{} ids", IDS_PER_VIOLATION_MAX + 3)));
    }

    #[test]
    fn acknowledged_statuses_only_allow_forward_moves() {
        let acked = |kind, status: &str| Acked {
            appointment_id: "a".into(),
            clinic_id: "c".into(),
            slot_id: "s".into(),
            vaccine: "v".into(),
            citizen_id: "p".into(),
            kind,
            status: status.into(),
            batch: None,
        };
        let create = acked(AckKind::Create, "PENDING");
        assert!(STATUSES.iter().all(|s| status_honours(&create, s)));
        let confirm = acked(AckKind::Confirm, "CONFIRMED");
        for s in STATUSES {
            assert_eq!(
                status_honours(&confirm, s),
                CONFIRMED_OR_LATER.contains(&s),
                "{s}"
            );
        }
        // A repeated confirm answered with a final status pins that status.
        let confirm_late = acked(AckKind::Confirm, "ADMINISTERED");
        assert!(status_honours(&confirm_late, "ADMINISTERED"));
        assert!(!status_honours(&confirm_late, "CONFIRMED"));
        for (cancelled, other) in [("RELEASED", "CLINIC_CANCELLED"), ("CANCELLED", "CONFIRMED")] {
            let cancel = acked(AckKind::Cancel, cancelled);
            assert!(status_honours(&cancel, cancelled));
            assert!(!status_honours(&cancel, other));
        }
    }

    #[test]
    fn only_client_ids_are_read() {
        assert!(is_client_id("clinic-1_A"));
        for bad in ["", "a/b", "a?b", "a b", &"x".repeat(65)] {
            assert!(!is_client_id(bad), "{bad:?}");
        }
    }
}
