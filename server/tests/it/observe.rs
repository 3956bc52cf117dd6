//! Observability over HTTP: `GET /metrics` (operators only; after a scripted run of the real
//! binary its counters equal what the script did, and the text is Prometheus exposition
//! format, checked by a strict parser below), `X-Request-Id` on every answer, and
//! `--log-format json` lines carrying the request id, route, status and latency and no
//! citizen id.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;
use crate::spawned;

/// Longest wait for a hold of `hold_seconds: 1` to expire.
const EXPIRY_WAIT: Duration = Duration::from_secs(15);

// ---- a strict parser of the text exposition format (version 0.0.4) --------------------

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("value {text:?}: {e}")),
    }
}

/// `{a="x",b="y"}` (the braces included); returns the labels and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next() != Some((0, '"')) {
            return Err(format!("label {name} is not quoted"));
        }
        let mut value = String::new();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[eq + 1 + end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// The family a sample belongs to, given the declared types (`x_bucket` of histogram `x`).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        matches!(
            types.get(base).map(String::as_str),
            Some("histogram" | "summary")
        )
        .then_some(base)
    })
}

/// Parses the whole text strictly: every line a comment (`# HELP`, `# TYPE` before the
/// family's samples, at most once), blank, or a sample of a declared family; histogram
/// buckets cumulative, ending at `+Inf` equal to `_count`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_metric_name(name) {
                return Err(fail(format!("bad metric name {name:?}")));
            }
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                    return Err(fail(format!("bad type {t:?}")));
                }
                if samples
                    .iter()
                    .any(|s: &Sample| family_of(&s.name, &types) == Some(name))
                    || types.insert(name.to_string(), t.to_string()).is_some()
                {
                    return Err(fail("TYPE after samples, or twice".into()));
                }
            } else if kind != "HELP" {
                return Err(fail(format!("unknown comment {kind:?}")));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(fail("a comment must be `# HELP` or `# TYPE`".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(fail)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| fail(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields".into()));
        }
        if family_of(name, &types).is_none() {
            return Err(fail(format!("{name} has no TYPE")));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&samples, &types)?;
    Ok(samples)
}

/// A series' labels but `le`, in order.
type LabelPairs = Vec<(String, String)>;

/// Each histogram series: buckets non-decreasing in `le` order, `+Inf` present and equal to
/// `_count`.
fn check_histograms(samples: &[Sample], types: &HashMap<String, String>) -> Result<(), String> {
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<LabelPairs, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == bucket) {
            let le = parse_value(s.labels.get("le").ok_or("a bucket without le")?)?;
            let mut key: Vec<_> = s.labels.clone().into_iter().collect();
            key.retain(|(k, _)| k != "le");
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!(
                    "{family}{key:?}: buckets not cumulative: {buckets:?}"
                ));
            }
            let (le, inf) = *buckets.last().expect("at least one bucket");
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count")
                        && s.labels.clone().into_iter().collect::<Vec<_>>() == key
                })
                .ok_or(format!("{family}{key:?}: no _count"))?;
            if le != f64::INFINITY || inf != count.value {
                return Err(format!(
                    "{family}{key:?}: +Inf bucket {inf} vs count {}",
                    count.value
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_is_not_exposition_format() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let parsed = parse_exposition(good).unwrap();
    assert_eq!(parsed[0].labels["y"], "q\"");
    for bad in [
        "a_total 1\n",                        // no TYPE
        "# TYPE a counter\na{x=1} 1\n",       // unquoted label
        "# TYPE a counter\na{x=\"1\"} one\n", // not a number
        "# TYPE a counter\na 1 2 3\n",        // trailing field
        "# TYPE a counter\n# TYPE a gauge\n", // TYPE twice
        "# TYPE 1a counter\n",                // bad name
        "# TYPE a counter\na{x=\"1\"\n",      // unterminated labels
        "#TYPE a counter\n",                  // not a HELP/TYPE comment
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// The value of `name` with exactly these labels (0 when absent).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map_or(0.0, |s| s.value)
}

/// Every sample of `name` (any labels).
fn all<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| s.name == name)
}

async fn scrape(api: &Api, operator: &str) -> Vec<Sample> {
    let r = api.send(Req::get("/metrics").token(operator)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        r.content_type
    );
    parse_exposition(&r.text).unwrap_or_else(|e| panic!("{e}\n{}", r.text))
}

// ---- in process: who may scrape, request ids --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_operators_only() {
    let h = Harness::start().await;
    let r = h.send(Req::get("/metrics")).await;
    assert_error_code(&r, 401, "UNAUTHENTICATED");
    for role_token in [
        h.api.authority.clone(),
        h.citizen_token("ann"),
        h.staff_token("c-1"),
    ] {
        assert_error_code(
            &h.send(Req::get("/metrics").token(&role_token)).await,
            403,
            "FORBIDDEN",
        );
    }
    // A server in a process with no recorder installed still shows the node's state.
    let samples = scrape(&h.api, &h.operator).await;
    assert_eq!(
        all(&samples, "holdfast_shard_inflight").count(),
        SHARDS as usize
    );
    assert_eq!(value(&samples, "holdfast_holds_active", &[]), 0.0);
    h.shutdown().await;
}

fn request_id(resp: &Resp) -> String {
    resp.headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on a {}: {:?}", resp.status, resp.headers))
        .to_str()
        .unwrap()
        .to_string()
}

/// Sends GET /healthz with `X-Request-Id: id`; returns the id answered.
async fn echoed(api: &Api, id: &str) -> String {
    let r = api
        .client
        .get(api.url("/healthz"))
        .header("x-request-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_and_a_valid_one_is_echoed() {
    let h = Harness::start().await;
    // Refused ids are replaced by new, valid ones.
    let too_long = "a".repeat(129);
    for bad in [
        too_long.as_str(),
        "has space",
        "slash/y",
        "semi;colon",
        "ünï",
    ] {
        let answered = echoed(&h.api, bad).await;
        assert_ne!(answered, bad);
        assert!(
            (1..=128).contains(&answered.len())
                && answered
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{answered:?}"
        );
    }
    for good in ["abc", "Req-1.2_3", &"z".repeat(128)] {
        assert_eq!(echoed(&h.api, good).await, good);
    }
    // Errors of every kind: 404, 405, 401, 415, 413; new ids differ.
    let mut seen = Vec::new();
    for (req, status) in [
        (Req::get("/nope"), 404),
        (Req::new(Method::DELETE, "/healthz"), 405),
        (Req::get("/v1/admin/shards"), 401),
        (
            Req::put("/v1/clinics/c-1")
                .token(&h.api.authority)
                .raw("text/plain", "x"),
            415,
        ),
        (Req::get("/healthz"), 200),
    ] {
        let r = h.send(req).await;
        assert_eq!(r.status, status, "{}", r.text);
        seen.push(request_id(&r));
    }
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = h
        .send_oversized(
            Req::put("/v1/clinics/c-2")
                .token(&h.api.authority)
                .raw("application/json", big),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text);
    seen.push(request_id(&r));
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "{seen:?}");
    h.shutdown().await;
}

// ---- the real binary: counters after a scripted run, JSON logs -------------------------

/// This test's files, removed when it ends.
struct Dirs(PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn spawn(name: &str, flags: &[&str], rust_log: &str) -> (spawned::Spawned, Dirs) {
    let dirs = Dirs(temp_dir(name));
    let secret = dirs.0.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let server = spawned::start_logging(
        &dirs.0.join("data"),
        &secret,
        &dirs.0.join("addr"),
        name,
        None,
        flags,
        rust_log,
    )
    .await;
    (server, dirs)
}

async fn book_holding(api: &Api, citizen: &str, hold_seconds: i64) -> Resp {
    let mut body = booking_body(citizen, "c-1", "s-1", VACCINE);
    body["hold_seconds"] = json!(hold_seconds);
    api.book_with(&api.citizen_token(citizen), &fresh_key("m"), &body)
        .await
}

async fn wait_expired(api: &Api, id: &str) {
    let started = Instant::now();
    loop {
        if api.appointment_json(id).await["status"] == "EXPIRED" {
            return;
        }
        assert!(
            started.elapsed() < EXPIRY_WAIT,
            "{id} did not expire within {EXPIRY_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_scripted_run_the_counters_equal_what_it_did() {
    let (server, _dirs) = spawn("metrics-run", &[], "warn").await;
    let api = &server.api;
    let operator = token(holdfast_gateway::auth::Role::Operator, "op", None, None);
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c-1", "s-1", 2, 10).await;
    for c in ["ann", "bob", "cid"] {
        api.put_adult(c).await;
    }
    api.put_citizen("kid", "2024-01-01").await;

    let ann = book_holding(api, "ann", 1).await.expect(201);
    let bob = api.book_ok("bob", "c-1", "s-1").await;
    api.confirm(&api.citizen_token("bob"), &bob)
        .await
        .expect(200);
    assert_error_code(&api.book("cid", "c-1", "s-1").await, 409, "SOLD_OUT");
    wait_expired(api, ann["appointment_id"].as_str().unwrap()).await;
    assert_error_code(&api.book("kid", "c-1", "s-1").await, 422, "NOT_ELIGIBLE");
    assert_error_code(&api.book("bob", "c-1", "s-1").await, 409, "ALREADY_BOOKED");

    let s = scrape(api, &operator).await;
    let bookings = |outcome| value(&s, "holdfast_bookings_total", &[("outcome", outcome)]);
    assert_eq!(bookings("created"), 2.0);
    assert_eq!(bookings("sold_out"), 1.0);
    assert_eq!(bookings("not_eligible"), 1.0);
    assert_eq!(bookings("already_booked"), 1.0);
    assert_eq!(
        all(&s, "holdfast_bookings_total").count(),
        4,
        "no other outcome"
    );
    assert_eq!(value(&s, "holdfast_expiries_total", &[]), 1.0);
    assert_eq!(value(&s, "holdfast_no_shows_total", &[]), 0.0);
    assert_eq!(value(&s, "holdfast_holds_active", &[]), 0.0);
    for code in ["RATE_LIMITED", "QUEUE_REQUIRED"] {
        assert_eq!(
            value(&s, "holdfast_rate_limited_total", &[("code", code)]),
            0.0
        );
    }
    assert!(
        all(&s, "holdfast_rate_limited_total").count() == 2,
        "one line per code, there from the start"
    );
    assert_eq!(
        value(
            &s,
            "holdfast_breaker_open",
            &[("dependency", "eligibility")]
        ),
        0.0
    );
    let requests = |route, method, status| {
        value(
            &s,
            "holdfast_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("/v1/appointments", "POST", "201"), 2.0);
    assert_eq!(requests("/v1/appointments", "POST", "409"), 2.0);
    assert_eq!(requests("/v1/appointments", "POST", "422"), 1.0);
    assert_eq!(
        requests("/v1/appointments/{id}/confirm", "POST", "200"),
        1.0
    );
    assert!(requests("/v1/appointments/{id}", "GET", "200") >= 1.0);
    // Route labels are templates: no appointment or citizen id in any label.
    for sample in all(&s, "holdfast_http_requests_total") {
        let route = &sample.labels["route"];
        assert!(
            !route.contains("ann") && !route.contains("bob") && !route.contains(&bob),
            "{route}"
        );
    }
    let histogram_count =
        |name: &str, labels: &[(&str, &str)]| value(&s, &format!("{name}_count"), labels);
    assert_eq!(
        histogram_count(
            "holdfast_http_request_duration_seconds",
            &[("route", "/v1/appointments")]
        ),
        5.0
    );
    let buckets: Vec<_> = all(&s, "holdfast_http_request_duration_seconds_bucket")
        .filter(|b| b.labels["route"] == "/v1/appointments")
        .map(|b| b.labels["le"].clone())
        .collect();
    assert!(
        buckets.contains(&"0.0001".to_string()) && buckets.contains(&"10".to_string()),
        "{buckets:?}"
    );
    assert!(histogram_count("holdfast_wal_batch_records", &[]) >= 1.0);
    assert!(histogram_count("holdfast_wal_fsync_seconds", &[]) >= 1.0);
    assert_eq!(all(&s, "holdfast_snapshot_age_seconds").count(), 8);
    assert_eq!(all(&s, "holdfast_shard_inflight").count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_id_route_status_latency_and_no_citizen_id() {
    let (mut server, _dirs) = spawn(
        "json-logs",
        &["--log-format", "json"],
        "info,holdfast_gateway=debug",
    )
    .await;
    let api = server.api.clone();
    api.standard_vaccine(VACCINE).await;
    api.clinic_with_slot("c-1", "s-1", 1, 5).await;
    let citizen = "citizen-zq81x";
    api.put_adult(citizen).await;
    let r = api
        .client
        .post(api.url("/v1/appointments"))
        .bearer_auth(api.citizen_token(citizen))
        .header("idempotency-key", fresh_key("log"))
        .header("x-request-id", "trace-me-1")
        .json(&booking_body(citizen, "c-1", "s-1", VACCINE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let appointment: Value = r.json().await.unwrap();
    let appointment_id = appointment["appointment_id"].as_str().unwrap().to_string();
    api.send(Req::get("/nope")).await;

    let started = Instant::now();
    let mut lines = Vec::new();
    let booking_line = loop {
        lines.extend(server.stderr_lines());
        let found = lines.iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["span"]["request_id"] == "trace-me-1").then_some(v)
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no log line for trace-me-1: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        booking_line["span"]["route"], "/v1/appointments",
        "{booking_line}"
    );
    assert_eq!(booking_line["span"]["method"], "POST", "{booking_line}");
    assert_eq!(booking_line["status"], 201, "{booking_line}");
    assert!(
        booking_line["latency_us"].as_u64().is_some(),
        "{booking_line}"
    );
    assert_eq!(booking_line["level"], "DEBUG", "{booking_line}");
    // Every line is JSON, and none names the citizen, the appointment or a token.
    tokio::time::sleep(Duration::from_millis(100)).await;
    lines.extend(server.stderr_lines());
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(citizen), "a citizen id in the logs: {line}");
        assert!(
            !line.contains(&appointment_id),
            "an appointment id in the logs: {line}"
        );
        assert!(
            !line.contains("Bearer") && !line.contains("eyJ"),
            "a token in the logs: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"route\":\"unmatched\"") && l.contains("\"status\":404")),
        "no line for the 404: {lines:#?}"
    );
}
