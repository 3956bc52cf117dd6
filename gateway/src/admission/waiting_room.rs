//! The waiting room (`--waiting-room N`): tickets in arrival order, admitted at most N a
//! second across the node, each admission an [`token`](super::token) good for
//! `--admission-ttl` and one successful booking.
//!
//! # How it moves
//!
//! Nothing ticks: every call first does what time has made due. Admitted tickets whose time
//! is up leave; then the head of the queue is admitted while the pace allows (a `governor`
//! bucket of N a second with a burst of N, on the node's clock). Between calls nobody is
//! waiting for an answer, so nobody can tell; after a quiet spell the first caller admits
//! at most a burst of N at once, never a backlog.
//!
//! # First come, first served
//!
//! A ticket's number is its place in arrival order and tickets are admitted strictly in that
//! order, so a waiting ticket's position is its number minus the number admitted so far. A
//! caller holds one ticket at a time: asking again answers the ticket it has (no second place
//! in the line, no jumping it by asking again). After a successful booking the caller may
//! queue again (at the back); a ticket whose admission ran out unused leaves, and so may its
//! caller. A ticket nobody polls keeps its place and, admitted, its admission runs out unused:
//! such a ticket takes one admission from the node's pace, as in every virtual queue that
//! cannot tell a patient citizen from a gone one.
//!
//! # One booking per admission
//!
//! A token's use is recorded on its ticket: free, booking under an Idempotency-Key, booked
//! under it. A booking claims the token for its key; a second booking with another key is
//! refused while the first runs or after it succeeded; the same key passes (the idempotent
//! replay answers it, and creates nothing). A booking that fails frees the token again: it is
//! good for one *successful* booking.
//!
//! # Not durable
//!
//! The room is in memory and its token key is drawn at start-up, so a restart empties it:
//! every ticket is then unknown (404) and every token refused (429 `QUEUE_REQUIRED`), and
//! citizens queue again. Logging every ticket would put a write on the path of the very
//! traffic the room exists to hold back, for a line that a restart (seconds) reshuffles
//! little; and a used-token record that survived while the tokens did not would be the only
//! way to keep "one booking per token" across a restart. Bookings themselves are durable, and
//! an Idempotency-Key replay of a booking made before the restart still answers with its
//! appointment once the citizen holds a new admission.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use holdfast_engine::{Clock, UnixMs};

use super::rate_limit::{NodeTime, RetryAfter};
use super::token::TokenKey;

/// Most tickets held at once, waiting or admitted: 110-160 bytes each with the room's tables
/// (measured: 109 at 200,000 tickets, 158 at 500,000, where the tables have just doubled),
/// so at most about 75 MB. A launch that queues more
/// than half a million citizens on one node is answered 503 with `Retry-After` until places
/// free.
pub const WAITING_ROOM_TICKETS_MAX: usize = 500_000;
/// Largest `--waiting-room`: admissions per second across the node. Far above what a node
/// books (a few thousand a second, docs/PERFORMANCE.md), so the bound is only a sanity check.
pub const WAITING_ROOM_RATE_MAX: u32 = 1_000_000;
/// Default of `--admission-ttl`: how long an admission stays good, in milliseconds.
pub const ADMISSION_TTL_MS_DEFAULT: i64 = 10 * 60 * 1000;
/// Tries at a fresh random ticket id before giving up (a collision of 64 random bits among
/// half a million tickets is a one in thirty million event; four in a row do not happen).
const TICKET_ID_TRIES: usize = 4;

/// Where a ticket stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Still in line: `position` 1 is next.
    Waiting {
        position: u64,
        estimated_wait_s: u64,
    },
    /// Admitted: `token` books once until `until_ms`.
    Admitted { token: String, until_ms: UnixMs },
}

/// A ticket as its caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    pub ticket: String,
    pub place: Place,
}

/// Why a ticket could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// No such ticket (never issued, admission over, or issued before a restart).
    Unknown,
    /// Another caller's ticket.
    NotYours,
}

/// Why a booking may not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Admission-Token` header.
    Missing,
    /// Not a token this server issued to this caller (forged, altered, another caller's,
    /// or from before a restart).
    Invalid,
    /// The admission is over.
    Expired,
    /// The token already booked (or is booking) under another Idempotency-Key.
    Used,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::Expired => "expired",
            Refusal::Used => "used",
        }
    }
}

/// What an admission's token did, by the hash of the Idempotency-Key it booked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Free,
    Booking { key: u64 },
    Booked { key: u64 },
}

/// A ticket, in about 40 bytes: the caller and the Idempotency-Key are kept as 64-bit hashes
/// (SipHash under a key drawn at start-up) and the token is signed when it is read, so a
/// ticket's size does not depend on what a client sends.
#[derive(Debug)]
struct Ticket {
    sub: u64,
    /// Place in arrival order (0 is the first ticket this process issued).
    number: u64,
    /// Once admitted: until when, and what its token did.
    admission: Option<(UnixMs, Use)>,
}

#[derive(Debug, Default)]
struct Room {
    tickets: HashMap<u64, Ticket>,
    /// The ticket each caller (by hash) holds: waiting, or admitted and not yet booked.
    by_sub: HashMap<u64, u64>,
    /// Waiting tickets, oldest first.
    waiting: VecDeque<u64>,
    /// Admitted tickets in admission order, which is the order their admissions end.
    admitted: VecDeque<(UnixMs, u64)>,
    issued_total: u64,
    admitted_total: u64,
}

type Pace = RateLimiter<NotKeyed, InMemoryState, NodeTime, NoOpMiddleware<std::time::Duration>>;

/// The node's waiting room.
pub struct WaitingRoom {
    room: Mutex<Room>,
    pace: Pace,
    per_second: NonZeroU32,
    ttl_ms: i64,
    key: TokenKey,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    /// [`WAITING_ROOM_TICKETS_MAX`] (smaller in unit tests).
    tickets_max: usize,
}

impl WaitingRoom {
    /// A room admitting `per_second` tickets a second, each admission good for `ttl_ms`.
    pub fn new(per_second: NonZeroU32, ttl_ms: i64, clock: Arc<dyn Clock>) -> WaitingRoom {
        WaitingRoom {
            room: Mutex::new(Room::default()),
            pace: RateLimiter::direct_with_clock(
                Quota::per_second(per_second),
                NodeTime(clock.clone()),
            ),
            per_second,
            ttl_ms,
            key: TokenKey::random(),
            hasher: RandomState::new(),
            clock,
            tickets_max: WAITING_ROOM_TICKETS_MAX,
        }
    }

    pub fn per_second(&self) -> u32 {
        self.per_second.get()
    }

    /// The caller's ticket: the one it holds, or a new one at the back of the line. When the
    /// room is full ([`WAITING_ROOM_TICKETS_MAX`]), when to try again.
    pub fn join(&self, sub: &str) -> Result<TicketView, RetryAfter> {
        let now = self.clock.now_ms();
        let caller = self.hasher.hash_one(sub);
        let mut room = self.lock(now);
        if let Some(&ticket) = room.by_sub.get(&caller) {
            return Ok(self.view(&room, sub, ticket));
        }
        if room.tickets.len() >= self.tickets_max {
            // The first place to free is the oldest admission's end.
            let wait_ms = room
                .admitted
                .front()
                .map_or(self.ttl_ms, |(until, _)| until - now);
            return Err(RetryAfter::from_wait(std::time::Duration::from_millis(
                u64::try_from(wait_ms).unwrap_or(0),
            )));
        }
        let ticket = new_ticket_id(&room.tickets).ok_or(RetryAfter(1))?;
        let number = room.issued_total;
        room.issued_total += 1;
        room.tickets.insert(
            ticket,
            Ticket {
                sub: caller,
                number,
                admission: None,
            },
        );
        room.by_sub.insert(caller, ticket);
        room.waiting.push_back(ticket);
        self.admit(&mut room, now);
        Ok(self.view(&room, sub, ticket))
    }

    /// Where `ticket` stands, for its caller `sub`.
    pub fn look(&self, sub: &str, ticket: &str) -> Result<TicketView, LookupError> {
        let id = parse_ticket_id(ticket).ok_or(LookupError::Unknown)?;
        let room = self.lock(self.clock.now_ms());
        match room.tickets.get(&id) {
            None => Err(LookupError::Unknown),
            Some(t) if t.sub != self.hasher.hash_one(sub) => Err(LookupError::NotYours),
            Some(_) => Ok(self.view(&room, sub, id)),
        }
    }

    /// How long a newcomer would wait now: the `Retry-After` of a booking refused for want
    /// of an admission.
    pub fn newcomer_wait(&self) -> RetryAfter {
        let room = self.lock(self.clock.now_ms());
        let position = room.waiting.len() as u64 + 1;
        RetryAfter(
            u32::try_from(self.wait_s(position))
                .unwrap_or(u32::MAX)
                .max(1),
        )
    }

    /// Lets a booking by `sub` under Idempotency-Key `key` pass with `token`, or says why not.
    /// The pass claims the token until it is [`BookingPass::booked`] or dropped.
    pub fn pass(
        self: &Arc<Self>,
        sub: &str,
        token: Option<&str>,
        key: &str,
    ) -> Result<BookingPass, Refusal> {
        let admitted = self
            .key
            .verify(token.ok_or(Refusal::Missing)?, sub)
            .ok_or(Refusal::Invalid)?;
        let ticket = parse_ticket_id(&admitted.ticket).ok_or(Refusal::Invalid)?;
        let now = self.clock.now_ms();
        if admitted.until_ms <= now {
            return Err(Refusal::Expired);
        }
        let (caller, key) = (self.hasher.hash_one(sub), self.hasher.hash_one(key));
        let mut room = self.lock(now);
        let admission = room
            .tickets
            .get_mut(&ticket)
            .filter(|t| t.sub == caller)
            .ok_or(Refusal::Expired)?
            .admission
            .as_mut()
            .ok_or(Refusal::Invalid)?;
        let owner = match admission.1 {
            Use::Free => {
                admission.1 = Use::Booking { key };
                true
            }
            Use::Booking { key: k } | Use::Booked { key: k } if k == key => false,
            Use::Booking { .. } | Use::Booked { .. } => return Err(Refusal::Used),
        };
        Ok(BookingPass {
            room: self.clone(),
            caller,
            ticket,
            key,
            owner,
            booked: false,
        })
    }

    /// Tickets held now (waiting or admitted).
    pub fn tickets(&self) -> usize {
        self.lock(self.clock.now_ms()).tickets.len()
    }

    /// The room, with what time has made due done: admissions that ended leave, the head
    /// of the line is admitted as the pace allows.
    fn lock(&self, now: UnixMs) -> MutexGuard<'_, Room> {
        let mut room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(until, ticket)) = room.admitted.front() {
            if until > now {
                break;
            }
            room.admitted.pop_front();
            if let Some(t) = room.tickets.remove(&ticket) {
                if room.by_sub.get(&t.sub) == Some(&ticket) {
                    room.by_sub.remove(&t.sub);
                }
            }
        }
        self.admit(&mut room, now);
        room
    }

    fn admit(&self, room: &mut Room, now: UnixMs) {
        while !room.waiting.is_empty() && self.pace.check().is_ok() {
            let ticket = room.waiting.pop_front().expect("not empty");
            let until_ms = now + self.ttl_ms;
            let Some(t) = room.tickets.get_mut(&ticket) else {
                continue;
            };
            t.admission = Some((until_ms, Use::Free));
            room.admitted.push_back((until_ms, ticket));
            room.admitted_total += 1;
        }
    }

    /// `ticket` as its caller `sub` sees it (the token is signed here, for `sub`).
    fn view(&self, room: &Room, sub: &str, ticket: u64) -> TicketView {
        let t = &room.tickets[&ticket];
        let id = format!("{ticket:016x}");
        let place = match t.admission {
            Some((until_ms, _)) => Place::Admitted {
                token: self.key.sign(sub, &id, until_ms),
                until_ms,
            },
            None => {
                let position = t.number - room.admitted_total + 1;
                Place::Waiting {
                    position,
                    estimated_wait_s: self.wait_s(position),
                }
            }
        };
        TicketView { ticket: id, place }
    }

    /// Seconds until `position` is admitted at the room's pace.
    fn wait_s(&self, position: u64) -> u64 {
        position.div_ceil(u64::from(self.per_second.get()))
    }

    /// Records the end of a booking that held a pass.
    fn settle(&self, pass: &BookingPass) {
        let mut room = self.room.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((_, use_)) = room
            .tickets
            .get_mut(&pass.ticket)
            .and_then(|t| t.admission.as_mut())
        else {
            return;
        };
        if pass.booked {
            *use_ = Use::Booked { key: pass.key };
            // Its caller may queue again, at the back.
            if room.by_sub.get(&pass.caller) == Some(&pass.ticket) {
                room.by_sub.remove(&pass.caller);
            }
        } else if pass.owner && *use_ == (Use::Booking { key: pass.key }) {
            *use_ = Use::Free;
        }
    }
}

/// A booking let through by an admission token. Call [`BookingPass::booked`] when the
/// booking succeeded; dropped without it, the token is free again.
pub struct BookingPass {
    room: Arc<WaitingRoom>,
    caller: u64,
    ticket: u64,
    key: u64,
    /// Whether this booking claimed the token (another request with the same key rides on
    /// the first one's claim, and leaves it alone).
    owner: bool,
    booked: bool,
}

impl BookingPass {
    /// The booking succeeded: the token is used up.
    pub fn booked(mut self) {
        self.booked = true;
        // Drop settles.
    }
}

impl Drop for BookingPass {
    fn drop(&mut self) {
        self.room.settle(self);
    }
}

/// A fresh random ticket id not in `tickets`.
fn new_ticket_id(tickets: &HashMap<u64, Ticket>) -> Option<u64> {
    (0..TICKET_ID_TRIES).find_map(|_| {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).ok()?;
        let id = u64::from_be_bytes(bytes);
        (!tickets.contains_key(&id)).then_some(id)
    })
}

/// A ticket id as clients see it: exactly 16 lower-case hex digits.
fn parse_ticket_id(ticket: &str) -> Option<u64> {
    let hex = ticket.len() == 16
        && ticket
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| u64::from_str_radix(ticket, 16).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_engine::ManualClock;

    fn room(per_second: u32, ttl_ms: i64) -> (Arc<WaitingRoom>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let room = WaitingRoom::new(NonZeroU32::new(per_second).unwrap(), ttl_ms, clock.clone());
        (Arc::new(room), clock)
    }

    fn token(view: &TicketView) -> String {
        match &view.place {
            Place::Admitted { token, .. } => token.clone(),
            other => panic!("not admitted: {other:?}"),
        }
    }

    fn position(view: &TicketView) -> u64 {
        match view.place {
            Place::Waiting { position, .. } => position,
            Place::Admitted { .. } => 0,
        }
    }

    #[test]
    fn first_come_first_served_at_the_pace() {
        let (room, clock) = room(2, 60_000);
        let views: Vec<TicketView> = (0..6)
            .map(|i| room.join(&format!("c{i}")).unwrap())
            .collect();
        // A burst of 2 is admitted at once; the rest wait in arrival order.
        assert_eq!(
            views.iter().map(position).collect::<Vec<_>>(),
            [0, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            views[5].place,
            Place::Waiting {
                position: 4,
                estimated_wait_s: 2
            }
        );
        clock.advance(500);
        assert_eq!(position(&room.look("c2", &views[2].ticket).unwrap()), 0);
        assert_eq!(position(&room.look("c3", &views[3].ticket).unwrap()), 1);
        assert_eq!(position(&room.look("c5", &views[5].ticket).unwrap()), 3);
    }

    #[test]
    fn a_full_room_says_when_the_first_place_frees() {
        let (room, clock) = room(1, 10_000);
        let Ok(mut room) = Arc::try_unwrap(room) else {
            panic!("one handle")
        };
        room.tickets_max = 2;
        let room = Arc::new(room);
        room.join("a").unwrap(); // admitted at once, until +10 s
        room.join("b").unwrap(); // waiting
        clock.advance(4_000);
        // The first place frees when a's admission ends, 6 s from now.
        assert_eq!(room.join("c"), Err(RetryAfter(6)));
        assert_eq!(room.tickets(), 2, "nothing was added");
        clock.advance(6_000);
        assert!(room.join("c").is_ok());
    }

    #[test]
    fn asking_again_answers_the_same_ticket() {
        let (room, _clock) = room(1, 60_000);
        let first = room.join("a").unwrap();
        let waiting = room.join("b").unwrap();
        assert_eq!(room.join("a").unwrap(), first);
        assert_eq!(room.join("b").unwrap(), waiting);
        assert_eq!(room.tickets(), 2);
    }

    #[test]
    fn tickets_are_their_callers_own() {
        let (room, _clock) = room(1, 60_000);
        let a = room.join("a").unwrap();
        assert_eq!(room.look("b", &a.ticket), Err(LookupError::NotYours));
        assert_eq!(
            room.look("a", "0000000000000000"),
            Err(LookupError::Unknown)
        );
    }

    #[test]
    fn a_token_books_once_and_frees_on_failure() {
        let (room, _clock) = room(10, 60_000);
        let t = token(&room.join("a").unwrap());
        assert_eq!(room.pass("a", None, "k1").err(), Some(Refusal::Missing));
        assert_eq!(room.pass("b", Some(&t), "k1").err(), Some(Refusal::Invalid));
        let pass = room.pass("a", Some(&t), "k1").unwrap();
        assert_eq!(
            room.pass("a", Some(&t), "k2").err(),
            Some(Refusal::Used),
            "in flight"
        );
        drop(pass); // the booking failed (sold out, say)
        let pass = room.pass("a", Some(&t), "k2").unwrap();
        pass.booked();
        assert_eq!(room.pass("a", Some(&t), "k3").err(), Some(Refusal::Used));
        let replay = room
            .pass("a", Some(&t), "k2")
            .expect("the same key replays");
        drop(replay);
        assert!(
            room.pass("a", Some(&t), "k2").is_ok(),
            "a replay leaves it booked"
        );
        assert_eq!(room.pass("a", Some(&t), "k4").err(), Some(Refusal::Used));
        // Booked: the caller may queue again, with a new ticket.
        assert_ne!(token(&room.join("a").unwrap()), t);
    }

    #[test]
    fn admissions_end_and_leave_the_room() {
        let (room, clock) = room(1, 1_000);
        let a = room.join("a").unwrap();
        let t = token(&a);
        clock.advance(1_000);
        assert_eq!(room.pass("a", Some(&t), "k").err(), Some(Refusal::Expired));
        assert_eq!(room.look("a", &a.ticket), Err(LookupError::Unknown));
        assert_eq!(room.tickets(), 0);
        assert_ne!(room.join("a").unwrap().ticket, a.ticket);
    }
}
