//! `GET /openapi.json`: an OpenAPI 3.1 document of the whole contract (docs/API.md, Operators).

use crate::common::*;

/// Every route of docs/API.md that this build serves, as (method, path).
const SERVED_ROUTES: [(&str, &str); 26] = [
    ("put", "/v1/vaccines/{vaccine}"),
    ("put", "/v1/clinics/{clinic_id}"),
    ("post", "/v1/clinics/{clinic_id}/stock"),
    ("post", "/v1/clinics/{clinic_id}/stock/adjust"),
    ("put", "/v1/clinics/{clinic_id}/slots/{slot_id}"),
    ("post", "/v1/clinics/{clinic_id}/slots"),
    ("post", "/v1/clinics/{clinic_id}/slots/{slot_id}/cancel"),
    ("put", "/v1/citizens/{citizen_id}"),
    ("post", "/v1/citizens:bulk"),
    ("get", "/v1/clinics"),
    ("get", "/v1/clinics/{clinic_id}/availability"),
    ("post", "/v1/appointments"),
    ("post", "/v1/appointments/{id}/confirm"),
    ("post", "/v1/appointments/{id}/cancel"),
    ("get", "/v1/appointments/{id}"),
    ("get", "/v1/appointments/{id}/qr.svg"),
    ("get", "/v1/citizens/{citizen_id}/appointments"),
    ("get", "/v1/clinics/{clinic_id}/appointments"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/v1/admin/shards"),
    ("post", "/v1/checkin"),
    ("post", "/v1/appointments/{id}/administer"),
    ("get", "/console"),
    ("get", "/"),
    ("get", "/metrics"),
];

/// Routes of docs/API.md that the document (and the server) do not have yet.
const CONTRACT_ROUTES_MISSING: [(&str, &str); 2] =
    [("get", "/v1/events"), ("get", "/openapi.json")];

async fn document(h: &Harness) -> serde_json::Value {
    let r = h.send(Req::get("/openapi.json")).await;
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    r.expect(200)
}

fn missing_from(doc: &serde_json::Value, routes: &[(&str, &str)]) -> Vec<String> {
    routes
        .iter()
        .filter(|(method, path)| doc["paths"][*path].get(*method).is_none())
        .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_and_lists_every_served_route() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    let version = doc["openapi"].as_str().expect("an openapi version string");
    assert!(version.starts_with("3.1"), "{version}");
    assert!(doc["info"]["title"].is_string());
    let missing = missing_from(&doc, &SERVED_ROUTES);
    assert!(missing.is_empty(), "not in the document: {missing:?}");
    // Booking needs a bearer token and documents its errors.
    let create = &doc["paths"]["/v1/appointments"]["post"];
    for status in ["201", "400", "401", "403", "404", "409", "422"] {
        assert!(
            create["responses"].get(status).is_some(),
            "{status} in {create}"
        );
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    // And every served route is routed: no 404 or 405 from the router there.
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 1, 1).await;
    for (method, path) in SERVED_ROUTES {
        let concrete = path
            .replace("{vaccine}", VACCINE)
            .replace("{clinic_id}", "c-1")
            .replace("{slot_id}", "s-1")
            .replace("{citizen_id}", "ann")
            .replace("{id}", "ap-0-1");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h.send(Req::new(method.clone(), concrete.clone())).await;
        assert!(
            r.status != 404 && r.status != 405,
            "{method} {concrete}: {} {}",
            r.status,
            r.text
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_of_the_contract() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    let missing = missing_from(&doc, &CONTRACT_ROUTES_MISSING);
    assert!(missing.is_empty(), "not in the document: {missing:?}");
    // They are served, too (401 without a token, not 404).
    for (method, path) in [("GET", "/v1/events"), ("GET", "/metrics")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = h.send(Req::new(method.clone(), path)).await;
        assert_error_code(&r, 401, "UNAUTHENTICATED");
    }
    h.shutdown().await;
}

/// The API reference and the server's own document are kept in step: every operation of
/// `/openapi.json` is a row of `docs/API.md`'s endpoint table marked served ("yes"), and every
/// row marked served is an operation of the document (but `/openapi.json` itself, which the
/// document does not list).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_marks_exactly_the_served_routes() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    let reference_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/API.md");
    let reference = std::fs::read_to_string(reference_path).expect("docs/API.md is readable");
    let served_in_reference: std::collections::BTreeSet<(String, String)> = reference
        .lines()
        .filter_map(|line| {
            // | `METHOD /path` | who may call it | served |
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let route = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let (method, path) = route.split_once(' ')?;
            let path = path.split('?').next()?;
            (matches!(method, "GET" | "POST" | "PUT" | "DELETE") && cells.get(3) == Some(&"yes"))
                .then(|| (method.to_lowercase(), path.to_string()))
        })
        .collect();
    let mut in_document: std::collections::BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, operations)| {
            operations
                .as_object()
                .expect("operations")
                .keys()
                .filter(|m| matches!(m.as_str(), "get" | "post" | "put" | "delete" | "patch"))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    in_document.insert(("get".to_string(), "/openapi.json".to_string()));
    assert_eq!(served_in_reference, in_document);
    h.shutdown().await;
}

/// What `openapi-spec-validator` and `openapi-python-client` once refused: query parameters
/// declared `in: path` (and nullable) on `GET /v1/clinics`, the availability and a clinic's
/// appointments. Every path parameter is in its path's template; every filter is an optional,
/// non-null query parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_where_the_server_reads_them() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                if p["in"] == "path" {
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the template"
                    );
                    assert_eq!(p["required"], true, "{method} {path} {name}");
                }
            }
        }
    }
    let query = |path: &str, method: &str, name: &str| -> serde_json::Value {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no {name}"))
            .clone()
    };
    for (path, name) in [
        ("/v1/clinics", "region"),
        ("/v1/clinics", "vaccine"),
        ("/v1/clinics/{clinic_id}/availability", "vaccine"),
        ("/v1/clinics/{clinic_id}/availability", "from"),
        ("/v1/clinics/{clinic_id}/availability", "to"),
        ("/v1/clinics/{clinic_id}/appointments", "slot_id"),
        ("/v1/clinics/{clinic_id}/appointments", "status"),
    ] {
        let p = query(path, "get", name);
        assert_eq!(p["in"], "query", "{path} {name}: {p}");
        assert_ne!(p["required"], true, "{path} {name}: {p}");
        assert_eq!(p["schema"]["type"], "string", "{path} {name}: {p}");
    }
    let status = query("/v1/clinics/{clinic_id}/appointments", "get", "status");
    let statuses: Vec<&str> = status["schema"]["enum"]
        .as_array()
        .expect("an enum of statuses")
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let all: Vec<&str> = holdfast_engine::Status::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    assert_eq!(statuses, all);
    h.shutdown().await;
}

/// The document carries the server's own bounds, so a generated client checks what the
/// server checks: ids (in paths and bodies), counts and list lengths, each equal to the
/// named constant the server enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_carries_the_server_s_bounds() {
    use holdfast_engine::ids::CLIENT_ID_BYTES_MAX;
    use holdfast_engine::model::{SLOTS_BULK_MAX, SLOT_CAPACITY_MAX, STOCK_QUANTITY_MAX};
    use holdfast_gateway::routes::fields::{CLIENT_ID_PATTERN, LIST_ITEMS_MAX, TEXT_BYTES_MAX};
    let h = Harness::start().await;
    let doc = document(&h).await;
    let id_schema = serde_json::json!({
        "type": "string", "pattern": CLIENT_ID_PATTERN, "minLength": 1,
        "maxLength": CLIENT_ID_BYTES_MAX,
    });
    for (path, name) in [
        ("/v1/clinics/{clinic_id}", "clinic_id"),
        ("/v1/clinics/{clinic_id}/slots/{slot_id}", "slot_id"),
        ("/v1/citizens/{citizen_id}", "citizen_id"),
        ("/v1/vaccines/{vaccine}", "vaccine"),
    ] {
        let op = doc["paths"][path]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        let p = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        assert_eq!(p["schema"], id_schema, "{path} {name}");
    }
    let schema =
        |name: &str, field: &str| doc["components"]["schemas"][name]["properties"][field].clone();
    assert_eq!(schema("CreateAppointmentBody", "clinic_id"), id_schema);
    assert_eq!(schema("StockBody", "batch"), id_schema);
    assert_eq!(
        schema("StockBody", "quantity")["maximum"],
        STOCK_QUANTITY_MAX
    );
    assert_eq!(schema("StockBody", "quantity")["minimum"], 1);
    assert_eq!(schema("AdjustBody", "delta")["maximum"], STOCK_QUANTITY_MAX);
    assert_eq!(
        schema("AdjustBody", "delta")["minimum"],
        -STOCK_QUANTITY_MAX
    );
    assert_eq!(schema("SlotBody", "capacity")["maximum"], SLOT_CAPACITY_MAX);
    assert_eq!(
        schema("SlotBody", "priority_reserve")["maximum"],
        SLOT_CAPACITY_MAX
    );
    assert_eq!(
        schema("BulkSlotBody", "capacity")["maximum"],
        SLOT_CAPACITY_MAX
    );
    assert_eq!(schema("BulkSlotsBody", "slots")["maxItems"], SLOTS_BULK_MAX);
    assert_eq!(schema("SlotBody", "vaccines")["maxItems"], LIST_ITEMS_MAX);
    assert_eq!(schema("SlotBody", "vaccines")["minItems"], 1);
    assert_eq!(schema("CitizenBody", "doses")["maxItems"], LIST_ITEMS_MAX);
    assert_eq!(schema("CitizenBody", "allergies")["items"], id_schema);
    assert_eq!(schema("ClinicBody", "name")["maxLength"], TEXT_BYTES_MAX);
    assert_eq!(
        schema("CancelSlotBody", "reason")["maxLength"],
        TEXT_BYTES_MAX
    );
    assert_eq!(
        schema("AppointmentJson", "status")["enum"]
            .as_array()
            .map(Vec::len),
        Some(9)
    );
    // And the server refuses what the bounds exclude (one above each).
    h.standard_vaccine(VACCINE).await;
    h.put_clinic("c-1").await;
    let over = h
        .send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&h.authority)
                .json(&stock_body(VACCINE, "B-1", STOCK_QUANTITY_MAX + 1)),
        )
        .await;
    assert_error_code(&over, 400, "BAD_REQUEST");
    let long_id = "x".repeat(CLIENT_ID_BYTES_MAX + 1);
    let r = h
        .send(
            Req::put(format!("/v1/clinics/{long_id}"))
                .token(&h.authority)
                .json(&clinic_body()),
        )
        .await;
    assert_error_code(&r, 400, "BAD_REQUEST");
    h.shutdown().await;
}
