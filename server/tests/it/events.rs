//! `GET /v1/events` and the availability stream: who may read them, resume by sequence across
//! a SIGKILL (exactly the missing events, in order, none twice, none taken back), a consumer
//! that stops reading cut off with `lagged` while bookings go on, and the coalescing of the
//! availability stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use holdfast_gateway::auth::Role;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::spawned;
use crate::sse::{self, Msg};

const WAIT: Duration = Duration::from_secs(10);

/// Consecutive ids from `after + 1`, each once.
fn assert_consecutive(msgs: &[Msg], after: u64) {
    for (i, msg) in msgs.iter().enumerate() {
        assert_eq!(msg.id, Some(after + 1 + i as u64), "message {i}: {msg:?}");
        assert_eq!(msg.json()["seq"].as_u64(), msg.id);
        assert_eq!(msg.json()["type"].as_str(), Some(msg.event.as_str()));
    }
}

#[tokio::test]
async fn the_event_stream_is_for_operators_and_authorities_and_checks_its_resume_point() {
    let h = Harness::start().await;
    let base = h.api.base.clone();
    let citizen = h.citizen_token("p1");
    assert_eq!(
        sse::open(&base, "/v1/events", None, None)
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        sse::open(&base, "/v1/events", Some(&citizen), None)
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    let staff = h.staff_token("k1");
    assert_eq!(
        sse::open(&base, "/v1/events", Some(&staff), None)
            .await
            .err()
            .unwrap()
            .0,
        403
    );
    let bad = h
        .api
        .client
        .get(h.url("/v1/events"))
        .header("authorization", format!("Bearer {}", h.operator))
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let bad = h
        .send(Req::get("/v1/events?after=-1").token(&h.operator))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let unknown = sse::open(&base, "/v1/clinics/nowhere/availability/stream", None, None).await;
    assert_eq!(unknown.err().unwrap().0, 404);
    let authority = token(Role::Authority, "a", None, None);
    assert!(sse::open(&base, "/v1/events", Some(&authority), None)
        .await
        .is_ok());
    h.shutdown().await;
}

#[tokio::test]
async fn events_carry_ids_only_and_resume_after_a_sequence() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k1", "s1", 10, 10).await;
    h.put_adult("p1").await;
    let mut live = sse::open(&h.api.base, "/v1/events", Some(&h.operator), None)
        .await
        .unwrap();
    let id = h.book_ok("p1", "k1", "s1").await;
    // The set-up's own events may still reach the store after the stream started.
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = live.next(WAIT).await.expect("the booking's events come");
        if !got.is_empty() || msg.event == "AppointmentReserved" {
            got.push(msg);
        }
    }
    let first = got[0].id.unwrap();
    assert_consecutive(&got, first - 1);
    assert_eq!(got[0].event, "AppointmentReserved");
    let data = got[0].json();
    assert_eq!(data["appointment_id"].as_str(), Some(id.as_str()));
    assert_eq!(data["status"], "PENDING");
    for key in [
        "seq",
        "type",
        "at",
        "shard",
        "clinic_id",
        "slot_id",
        "citizen_id",
        "vaccine",
    ] {
        assert!(data.get(key).is_some(), "{key} missing in {data}");
    }
    assert!(data.get("birth_date").is_none());
    assert_eq!(got[1].event, "SlotAvailabilityChanged");
    h.confirm(&h.citizen_token("p1"), &id).await.expect(200);
    let confirmed = live.take(2, WAIT).await;
    assert_consecutive(&confirmed, first + 1);
    assert_eq!(confirmed[0].event, "AppointmentConfirmed");
    // `after=` resumes right after it: the confirmation again, nothing before.
    let mut resumed = sse::open(
        &h.api.base,
        &format!("/v1/events?after={}", first + 1),
        Some(&h.operator),
        None,
    )
    .await
    .unwrap();
    let again = resumed.take(2, WAIT).await;
    assert_eq!(again[0].id, confirmed[0].id);
    assert_eq!(again[0].data, confirmed[0].data);
    h.shutdown().await;
}

/// A reschedule's events carry its links (docs/API.md, "Reschedule"): the new appointment's
/// `rescheduled_from`, the old one's `rescheduled_to` on its `AppointmentCancelled`.
#[tokio::test]
async fn a_reschedule_s_events_carry_its_links() {
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k1", "s1", 10, 10).await;
    h.put_slot("k1", "s2", 10, &[VACCINE]).await;
    h.put_adult("p1").await;
    let old = h.book_ok("p1", "k1", "s1").await;
    h.confirm(&h.citizen_token("p1"), &old).await.expect(200);
    let mut live = sse::open(&h.api.base, "/v1/events", Some(&h.operator), None)
        .await
        .unwrap();
    let moved = h
        .send(
            Req::post(format!("/v1/appointments/{old}/reschedule"))
                .token(&h.citizen_token("p1"))
                .idem(&fresh_key("events-resched"))
                .json(&serde_json::json!({"clinic_id": "k1", "slot_id": "s2"})),
        )
        .await
        .expect(201);
    let new = moved["appointment_id"].as_str().unwrap().to_string();
    // The new appointment's events, then the old one's: a bounded number of messages.
    let mut of = HashMap::<(String, String), Value>::new();
    for _ in 0..12 {
        let Some(msg) = live.next(WAIT).await else {
            break;
        };
        let data = msg.json();
        if let Some(id) = data["appointment_id"].as_str() {
            of.insert((id.to_string(), msg.event.clone()), data.clone());
        }
        if msg.event == "AppointmentCancelled" {
            break;
        }
    }
    let reserved = &of[&(new.clone(), "AppointmentReserved".to_string())];
    assert_eq!(reserved["rescheduled_from"].as_str(), Some(old.as_str()));
    assert!(reserved.get("rescheduled_to").is_none(), "{reserved}");
    let cancelled = &of[&(old.clone(), "AppointmentCancelled".to_string())];
    assert_eq!(cancelled["rescheduled_to"].as_str(), Some(new.as_str()));
    assert!(
        cancelled.get("offered_from_waitlist").is_none(),
        "{cancelled}"
    );
    h.shutdown().await;
}

/// A raw connection that reads the answer's head and then nothing: its receive buffer is
/// small, so the server's writes back up at once.
async fn stalled_consumer(addr: &str, operator: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {operator}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(1))), "the answer's head came");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_with_lagged_while_bookings_go_on() {
    const WORKERS: usize = 8;
    const ROUNDS_PER_WORKER: usize = 700; // 4 events a round: 22,400 events, ~4x the bound
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k1", "s1", 100, 100).await;
    for w in 0..WORKERS {
        h.put_adult(&format!("p{w}")).await;
    }
    let addr = h.api.base.trim_start_matches("http://").to_string();
    let mut stalled = stalled_consumer(&addr, &h.operator).await;
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let api = h.api.clone();
        tasks.push(tokio::spawn(async move {
            let citizen = format!("p{w}");
            let token = api.citizen_token(&citizen);
            for _ in 0..ROUNDS_PER_WORKER {
                let id = api.book_ok(&citizen, "k1", "s1").await;
                api.cancel(&token, &id).await.expect(200);
            }
        }));
    }
    for task in tasks {
        task.await
            .expect("every booking and cancellation succeeded");
    }
    // Now read what was queued: it ends with `lagged`, naming the last sequence delivered.
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let lagged_at = loop {
        let read = tokio::time::timeout_at(deadline, stalled.read(&mut chunk)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            other => panic!("no `lagged` within the bound: {other:?}"),
        };
        text.extend_from_slice(&chunk[..n]);
        let seen = String::from_utf8_lossy(&text);
        if let Some(at) = seen.find("event: lagged\ndata: ") {
            if seen[at..].contains("}\n") {
                break seen[at..].to_string();
            }
        }
    };
    let seen = String::from_utf8_lossy(&text);
    let last_id = seen
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .next_back()
        .expect("some events were delivered before the cut");
    let data = lagged_at
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("data: ");
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["last_seq"].as_u64(), Some(last_id));
    assert!(last_id < (WORKERS * ROUNDS_PER_WORKER * 4) as u64);
    h.shutdown().await;
}

#[tokio::test]
async fn the_availability_stream_coalesces_a_burst_and_ends_with_the_final_counts() {
    const BOOKINGS: usize = 120;
    let h = Harness::start().await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("k1", "s1", 500, 500).await;
    h.put_slot("k1", "s2", 5, &[VACCINE]).await;
    for i in 0..BOOKINGS {
        h.put_adult(&format!("p{i}")).await;
    }
    let mut stream = sse::open(
        &h.api.base,
        "/v1/clinics/k1/availability/stream",
        None,
        None,
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..BOOKINGS {
        let api = h.api.clone();
        tasks.push(tokio::spawn(async move {
            api.book_ok(&format!("p{i}"), "k1", "s1").await
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut messages = 0;
    loop {
        let msg = stream.next(WAIT).await.expect("the final counts come");
        messages += 1;
        assert_eq!(msg.event, "SlotAvailabilityChanged");
        let slot = msg.json();
        assert_eq!(slot["slot_id"], "s1", "only the slot that changed: {slot}");
        if slot["pending"].as_u64() == Some(BOOKINGS as u64) {
            assert_eq!(slot["remaining"].as_u64(), Some(500 - BOOKINGS as u64));
            break;
        }
        assert!(
            messages < BOOKINGS,
            "one message per booking: not coalesced"
        );
    }
    assert!(
        messages * 4 <= BOOKINGS,
        "{messages} messages for {BOOKINGS} bookings"
    );
    h.shutdown().await;
}

/// (appointment, status) of each appointment event.
fn statuses(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter(|m| m.event.starts_with("Appointment"))
        .map(|m| {
            let d = m.json();
            (
                d["appointment_id"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_resume_after_sigkill_gets_exactly_the_missing_events() {
    let dir = temp_dir("events-resume");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let data = dir.join("data");
    let addr_file = dir.join("addr");
    let mut server = spawned::start(&data, &secret, &addr_file, "events", None).await;
    let api = server.api.clone();
    let operator = token(Role::Operator, "op", None, None);
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("k1", "s1", 100, 100).await;
    for i in 0..30 {
        api.put_adult(&format!("p{i}")).await;
    }
    // From the beginning: the set-up's events, then the bookings'.
    let mut first = sse::open(&api.base, "/v1/events?after=0", Some(&operator), None)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(api.book_ok(&format!("p{i}"), "k1", "s1").await);
    }
    for (i, id) in ids.iter().enumerate().take(5) {
        api.confirm(&api.citizen_token(&format!("p{i}")), id)
            .await
            .expect(200);
    }
    // 15 status changes, each followed by its slot's SlotAvailabilityChanged.
    let mut seen = Vec::new();
    while statuses(&seen).len() < 15
        || seen.last().map(|m: &Msg| m.event.as_str()) != Some("SlotAvailabilityChanged")
    {
        seen.push(
            first
                .next(WAIT)
                .await
                .expect("the first changes' events come"),
        );
    }
    assert_consecutive(&seen, 0);
    let last = seen.last().unwrap().id.unwrap();
    drop(first);
    // More changes, unseen; then SIGKILL while nobody reads, and a restart.
    for i in 10..20 {
        ids.push(api.book_ok(&format!("p{i}"), "k1", "s1").await);
    }
    for (i, id) in ids.iter().enumerate().skip(5).take(3) {
        api.cancel(&api.citizen_token(&format!("p{i}")), id)
            .await
            .expect(200);
    }
    server.kill();
    let server = spawned::start(&data, &secret, &addr_file, "events", None).await;
    let api = server.api.clone();
    for i in 20..25 {
        ids.push(api.book_ok(&format!("p{i}"), "k1", "s1").await);
    }
    // 10 books + 3 cancels before the kill, 5 books after: two events each.
    let missing = (10 + 3 + 5) * 2;
    let mut resumed = sse::open(&api.base, "/v1/events", Some(&operator), Some(last))
        .await
        .unwrap();
    let rest = resumed.take(missing, WAIT).await;
    assert_consecutive(&rest, last);
    assert!(
        resumed.next(Duration::from_millis(500)).await.is_none(),
        "nothing more than the missing events"
    );
    // None twice, and none taken back: the last status each event says is the stored one.
    let all: Vec<(String, String)> = statuses(&seen).into_iter().chain(statuses(&rest)).collect();
    let unique: HashSet<&(String, String)> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an event came twice: {all:?}");
    let mut final_status: HashMap<String, String> = HashMap::new();
    for (id, status) in &all {
        final_status.insert(id.clone(), status.clone());
    }
    assert_eq!(final_status.len(), ids.len());
    for id in &ids {
        let stored = api.appointment_json(id).await;
        assert_eq!(
            stored["status"].as_str(),
            final_status.get(id).map(String::as_str),
            "{id}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
