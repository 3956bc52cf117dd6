//! `GET /openapi.json`: an OpenAPI 3.1 document of the whole contract (docs/API.md, Operators).

use crate::common::*;

/// Every route of docs/API.md that this build serves, as (method, path).
const SERVED_ROUTES: [(&str, &str); 25] = [
    ("put", "/v1/vaccines/{vaccine}"),
    ("put", "/v1/clinics/{clinic_id}"),
    ("post", "/v1/clinics/{clinic_id}/stock"),
    ("post", "/v1/clinics/{clinic_id}/stock/adjust"),
    ("put", "/v1/clinics/{clinic_id}/slots/{slot_id}"),
    ("post", "/v1/clinics/{clinic_id}/slots"),
    ("post", "/v1/clinics/{clinic_id}/slots/{slot_id}/cancel"),
    ("put", "/v1/citizens/{citizen_id}"),
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
