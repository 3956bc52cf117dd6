//! The waitlist of a sold-out slot (docs/API.md, "Waitlist"): its entries, kept by the
//! clinic's shard beside the slot, in the order citizens joined.
//!
//! # The design
//!
//! - **Where entries live.** In the clinic's shard, per slot, in a [`Waitlists`] table that
//!   is part of the shard's state: joined, left, served and skipped by events
//!   (`WaitlistJoined`, `WaitlistLeft`) applied in `shard/apply.rs` like every other change,
//!   so they are in the log and in snapshots and come back in order after a restart. An
//!   entry's id (`wl-{shard}-{seq}`, [`crate::ids::WaitlistId`]) names its shard, so a
//!   `DELETE` goes straight there. The table also indexes entries by id and by citizen.
//! - **A citizen's listing** asks every shard for that citizen's entries (a fan-out of one
//!   small query per shard, each answered from the shard's by-citizen index). The number of
//!   shards is small (64 by default) and a listing is a rare read, while an index in the
//!   citizen's shard would cost every join, leave, serve and skip a second durable write in
//!   another shard, and a reconciliation after a crash between the two. Bounded: a citizen
//!   holds at most [`WAITLIST_PER_CITIZEN_PER_SHARD_MAX`] entries in one shard, so a listing
//!   is at most that many times the number of shards.
//! - **Offers.** When a change of a clinic's shard may let a waiting citizen in (a seat came
//!   back: expiry, release, cancel, rejection, a reschedule's move; or capacity or doses
//!   were added: the one test is `ShardState::room_made_by`), the shard hands the slot to
//!   the node's offer task once the change is durable ([`offers`], the same pattern as
//!   claim notices). The task runs one pass per slot at a time, at most
//!   [`OFFERS_IN_FLIGHT_MAX`] passes per node: it books the first waiting
//!   citizen through the booking saga (`Node::book`, so the citizen's claim, one active
//!   appointment, eligibility and stock hold as for any booking), with the default hold TTL.
//!   The hold and the entry's removal are one decision of the clinic's shard (one journaled
//!   step), and the appointment says `offered_from_waitlist`. A citizen who has booked
//!   elsewhere (`ALREADY_BOOKED`) or is not eligible is skipped: the entry is removed in one
//!   journaled step, and the next one is tried. `SOLD_OUT` or `OUT_OF_STOCK` (someone else
//!   took the seat first) ends the pass and keeps the list as it is. An offer whose hold was
//!   made and then rolled back because the external eligibility check was unavailable
//!   (`--outage-policy reject`) is not the citizen's doing: the entry is put back where it
//!   was (`WaitlistRestored`), and the pass stops until the next change.
//! - **Crashes.** Entries are durable with the rest of the shard. A hold made for an entry
//!   removes the entry in the same append, so a crash never offers one entry twice. An
//!   offer's claim is journaled when taken (not tentative, unlike a create's), and reaches the
//!   log before the hold (one writer, one queue): a crash after the hold leaves a claim the
//!   reconciliation binds to it (found by attempt), never an orphan hold it would reject with
//!   the entry already gone; a crash before the hold leaves the entry, and a claim the
//!   reconciliation ends. Offers themselves are not journaled: after recovery (and the
//!   claims' reconciliation), the node runs a pass for every slot that has both a free seat
//!   and waiting citizens, so no seat stays idle while someone waits.
//! - **A cancelled slot** drops its waitlist in the same step (`SlotCancelled`): its
//!   citizens are offered nothing and their entries disappear from their listings.

mod offers;
mod requests;
mod table;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::UnixMs;
use crate::ids::WaitlistId;
use crate::model::VaccineIdx;

pub(crate) use offers::Passes;
pub use offers::{
    OfferInbox, Offerer, OFFERS_IN_FLIGHT_MAX, OFFERS_PER_PASS_MAX, OFFER_BACKLOG_MAX,
};
pub use requests::{JoinRequest, Joined};
pub use table::{SlotAt, Waitlists};

/// Default of `--waitlist-max`: most entries one slot's waitlist holds (docs/API.md). A
/// slot of 40 seats with 1,000 waiting is already a queue few will reach the front of.
pub const WAITLIST_PER_SLOT_MAX_DEFAULT: usize = 1000;
/// Most entries one citizen holds in one shard (across that shard's slots): bounds a
/// citizen's listing (a fan-out over the shards) to this many times the shard count, and
/// keeps one citizen from queueing for every slot of a region.
pub const WAITLIST_PER_CITIZEN_PER_SHARD_MAX: usize = 16;

/// Why an entry left its waitlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitlistExit {
    /// The citizen (or an authority) took it off.
    Left,
    /// The citizen was offered a seat: a hold was made for it.
    Served,
    /// The citizen could not be served (booked elsewhere, not eligible): passed over.
    Skipped,
    /// The slot started: no seat of it can be offered any more, so its list closes
    /// (`ShardState::closed_waitlists`, at the shard's next tick).
    Closed,
}

impl WaitlistExit {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitlistExit::Left => "left",
            WaitlistExit::Served => "served",
            WaitlistExit::Skipped => "skipped",
            WaitlistExit::Closed => "closed",
        }
    }
}

/// One waiting citizen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEntry {
    /// The entry's number in its shard (its id is `wl-{shard}-{seq}`).
    pub seq: u64,
    pub citizen: Arc<str>,
    pub vaccine: VaccineIdx,
    pub joined_at_ms: UnixMs,
}

/// One entry as a citizen sees it (`GET /v1/citizens/{citizen_id}/waitlist`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitlistView {
    pub id: WaitlistId,
    pub clinic_id: Arc<str>,
    pub slot_id: Arc<str>,
    pub vaccine: Arc<str>,
    pub citizen_id: Arc<str>,
    /// From 1 (the front).
    pub position: u32,
    pub joined_at_ms: UnixMs,
}

/// The first citizen a slot's pass should offer a seat to (the offer task books it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferCandidate {
    pub id: WaitlistId,
    pub citizen_id: Arc<str>,
    pub vaccine: Arc<str>,
    /// The entry as it waits, and its index in the list (0: the front): what puts it back
    /// when an offer is undone for a reason that is not the citizen's (see
    /// `WaitlistRestored`).
    pub entry: WaitEntry,
    pub index: u32,
}

/// A slot, by name, that may have room for a waiting citizen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotRef {
    pub clinic_id: Arc<str>,
    pub slot_id: Arc<str>,
}
