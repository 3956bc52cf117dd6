//! The node's waitlist requests (docs/API.md, "Waitlist"): join (the citizen's record from
//! its shard, then one decision of the clinic's shard), leave (routed by the entry's id) and
//! a citizen's listing (a fan-out to every shard; why, in [`crate::waitlist`]).

use crate::command::{Command, JoinWaitlist, LeaveWaitlist, Query, QueryAnswer};
use crate::error::EngineError;
use crate::ids::WaitlistId;
use crate::journal::Durable;
use crate::node::{mismatch, Node};
use crate::view::Output;

use super::{WaitlistExit, WaitlistView};

/// A join, validated (`POST /v1/clinics/{clinic_id}/slots/{slot_id}/waitlist`).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub clinic_id: String,
    pub slot_id: String,
    pub vaccine: String,
    pub citizen_id: String,
}

/// A join's answer: the entry and its position (from 1), and what to wait for before it
/// may be told.
pub struct Joined {
    pub outcome: Result<(WaitlistId, u32), EngineError>,
    pub durable: Vec<Durable>,
}

impl Node {
    /// Joins a waitlist: the clinic's shard decides with the citizen's record (the rules
    /// are checked at once, so nobody waits for a seat they could not take).
    pub async fn join_waitlist(&self, request: JoinRequest) -> Joined {
        let citizen = match self.citizen(&request.citizen_id).await {
            Ok(record) => record,
            Err(e) => {
                return Joined {
                    outcome: Err(e),
                    durable: Vec::new(),
                }
            }
        };
        let shard = self.clinic_shard(&request.clinic_id);
        let join = Command::JoinWaitlist(JoinWaitlist {
            clinic_id: request.clinic_id,
            slot_id: request.slot_id,
            vaccine: request.vaccine,
            citizen_id: request.citizen_id,
            citizen,
            per_slot_max: self.config().waitlist_per_slot_max,
        });
        match self.exec_deferred(shard, join).await {
            Ok((decided, stored)) => Joined {
                outcome: match decided {
                    Ok(Output::Waitlisted { id, position }) => Ok((id, position)),
                    Ok(other) => Err(unexpected(shard, other)),
                    Err(refused) => Err(refused.into()),
                },
                durable: vec![stored],
            },
            Err(e) => Joined {
                outcome: Err(e),
                durable: Vec::new(),
            },
        }
    }

    /// Takes an entry off its list; `citizen`: it must be this citizen's (else
    /// `NotYours`), `None` for an authority.
    pub async fn leave_waitlist(
        &self,
        id: WaitlistId,
        citizen: Option<String>,
    ) -> Result<(), EngineError> {
        let leave = Command::LeaveWaitlist(LeaveWaitlist {
            seq: id.seq,
            citizen,
            why: WaitlistExit::Left,
        });
        self.exec(id.shard, leave).await.map(|_| ())
    }

    /// A citizen's entries across every shard, oldest first.
    pub async fn citizen_waitlist(
        &self,
        citizen_id: &str,
    ) -> Result<Vec<WaitlistView>, EngineError> {
        let query = Query::CitizenWaitlist {
            citizen_id: citizen_id.to_string(),
        };
        let mut all = Vec::new();
        for (shard, answer) in self.query_all(query).await?.into_iter().enumerate() {
            match answer {
                QueryAnswer::Waitlist(entries) => all.extend(entries),
                other => return Err(mismatch(shard as u32, &other)),
            }
        }
        all.sort_by_key(|e| (e.joined_at_ms, e.id));
        Ok(all)
    }

    pub fn parse_waitlist_id(&self, id: &str) -> Option<WaitlistId> {
        WaitlistId::parse(id, self.shards())
    }
}

fn unexpected(shard: u32, output: Output) -> EngineError {
    tracing::error!(
        shard,
        ?output,
        "a shard answered a waitlist join with the wrong kind of answer"
    );
    EngineError::Unavailable { shard }
}
