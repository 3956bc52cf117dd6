//! From a published change to the contract's domain events (docs/API.md, "Events") and to
//! audit entries: names and ids only, never a birth date, an allergy or an insurance id.

use holdfast_engine::model::Status;
use holdfast_engine::publish::Change;
use serde_json::{json, Map, Value};

/// One domain event before it has a node sequence: its type and its id fields.
pub struct Draft {
    pub event_type: &'static str,
    pub fields: Map<String, Value>,
}

/// One status change for the audit chain, before it has a sequence.
pub struct AuditDraft {
    pub appointment_id: String,
    pub status: &'static str,
}

fn status_event(status: Status) -> &'static str {
    match status {
        Status::Pending => "AppointmentReserved",
        Status::Confirmed => "AppointmentConfirmed",
        Status::Administered => "AppointmentAdministered",
        Status::Expired => "AppointmentExpired",
        Status::Released => "AppointmentReleased",
        Status::Rejected => "AppointmentRejected",
        Status::Cancelled => "AppointmentCancelled",
        Status::NoShow => "AppointmentNoShow",
        Status::ClinicCancelled => "AppointmentClinicCancelled",
    }
}

fn draft(event_type: &'static str, fields: Value) -> Draft {
    let Value::Object(fields) = fields else {
        unreachable!("drafts are built from object literals")
    };
    Draft { event_type, fields }
}

/// The domain events a change yields, in order (none for changes the contract does not
/// name: catalogue entries, citizens, claims).
pub fn events_of(change: &Change) -> Vec<Draft> {
    match change {
        Change::AppointmentStatus {
            appointment_id,
            clinic_id,
            slot_id,
            vaccine,
            citizen_id,
            status,
            offered_from_waitlist,
            rescheduled_from,
            rescheduled_to,
        } => {
            let mut fields = json!({
                "appointment_id": appointment_id.to_string(),
                "citizen_id": &**citizen_id,
                "clinic_id": &**clinic_id,
                "slot_id": &**slot_id,
                "vaccine": &**vaccine,
                "status": status.as_str(),
            });
            // The optional fields appear only where they apply (docs/API.md, "Events").
            if *offered_from_waitlist && *status == Status::Pending {
                fields["offered_from_waitlist"] = json!(true);
            }
            if let Some(from) = rescheduled_from {
                fields["rescheduled_from"] = json!(from.to_string());
            }
            if let Some(to) = rescheduled_to {
                fields["rescheduled_to"] = json!(to.to_string());
            }
            vec![
                draft(status_event(*status), fields),
                // Every status change moves a count of the slot's availability answer.
                slot_changed(clinic_id, slot_id),
            ]
        }
        Change::AppointmentAtRisk {
            appointment_id,
            clinic_id,
            at_risk,
        } => vec![draft(
            "AppointmentAtRisk",
            json!({
                "appointment_id": appointment_id.to_string(),
                "clinic_id": &**clinic_id,
                "at_risk": at_risk,
            }),
        )],
        Change::StockChanged {
            clinic_id,
            vaccine,
            batch,
            delta,
        } => vec![draft(
            "StockChanged",
            json!({
                "clinic_id": &**clinic_id,
                "vaccine": &**vaccine,
                "batch": batch,
                "delta": delta,
            }),
        )],
        Change::SlotPut { clinic_id, slot_id } | Change::SlotCancelled { clinic_id, slot_id } => {
            vec![slot_changed(clinic_id, slot_id)]
        }
        Change::VaccinePut { .. }
        | Change::ClinicPut { .. }
        | Change::CitizenPut { .. }
        | Change::CitizenClaim { .. }
        | Change::AppointmentNeedsReview { .. }
        | Change::WaitlistJoined { .. }
        | Change::WaitlistLeft { .. } => Vec::new(),
    }
}

fn slot_changed(clinic_id: &str, slot_id: &str) -> Draft {
    draft(
        "SlotAvailabilityChanged",
        json!({ "clinic_id": clinic_id, "slot_id": slot_id }),
    )
}

/// The audit entry of a change: every status an appointment takes.
pub fn audit_of(change: &Change) -> Option<AuditDraft> {
    match change {
        Change::AppointmentStatus {
            appointment_id,
            status,
            ..
        } => Some(AuditDraft {
            appointment_id: appointment_id.to_string(),
            status: status.as_str(),
        }),
        _ => None,
    }
}

/// RFC 3339 (UTC, milliseconds) of a change's instant.
pub fn rfc3339(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The SSE `data` / webhook body of a draft numbered `seq`, rendered once (it is stored as
/// it is sent): `{"seq","type","at","shard", ids...}`. `at` is the change's instant as
/// [`rfc3339`] renders it; event types and instants need no escaping.
pub fn body(seq: u64, shard: u32, at: &str, draft: &Draft) -> String {
    use std::io::Write as _;
    // Written straight into one buffer: the fields are not rendered into a string of their
    // own first (the recorder renders every event of the node).
    let mut out = Vec::with_capacity(96 + at.len() + 48 * draft.fields.len());
    let _ = write!(
        out,
        "{{\"seq\":{seq},\"type\":\"{}\",\"at\":\"{at}\",\"shard\":{shard}",
        draft.event_type
    );
    for (key, value) in &draft.fields {
        out.push(b',');
        // Rendering a string or a JSON value into memory cannot fail.
        let _ = serde_json::to_writer(&mut out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value);
    }
    out.push(b'}');
    // Only UTF-8 went in: the format's literals, `at`, the event type and serde_json's output.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_json_object_with_the_numbering_and_the_ids() {
        let with_ids = draft("StockChanged", json!({ "clinic_id": "k\"1", "delta": -1 }));
        let rendered = body(7, 3, "2026-12-01T09:00:00.000Z", &with_ids);
        // Byte for byte: bodies are stored as rendered and must not change between builds.
        assert_eq!(
            rendered,
            r#"{"seq":7,"type":"StockChanged","at":"2026-12-01T09:00:00.000Z","shard":3,"clinic_id":"k\"1","delta":-1}"#
        );
        let value: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(
            value,
            json!({
                "seq": 7, "type": "StockChanged", "at": "2026-12-01T09:00:00.000Z", "shard": 3,
                "clinic_id": "k\"1", "delta": -1
            })
        );
        let bare = body(8, 0, "2026-12-01T09:00:00.000Z", &draft("X", json!({})));
        assert_eq!(
            bare,
            r#"{"seq":8,"type":"X","at":"2026-12-01T09:00:00.000Z","shard":0}"#
        );
    }
}
