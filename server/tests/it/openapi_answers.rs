//! Real answers against what `/openapi.json` says of them: the status is documented for the
//! operation, the content type is the documented one, and a JSON body validates against the
//! documented schema (with `boon`, a JSON Schema 2020-12 validator: OpenAPI 3.1's schemas are
//! JSON Schema 2020-12). The Rust side of what Schemathesis checks in
//! server/tests/contract/fuzz.py, for the answers it once found wrong (a PUT citizen or PUT
//! vaccine answer that its schema could never accept; 415 undocumented on eight operations)
//! and for one answer of every kind a booking's life gives.

use crate::common::*;
use serde_json::{json, Value};

/// Where the document is added as a resource for `boon` (any absolute URL; nothing is
/// fetched).
const DOCUMENT_URL: &str = "http://holdfast.test/openapi.json";

/// The server's document, compiled on demand.
struct Document {
    doc: Value,
    compiler: boon::Compiler,
    schemas: boon::Schemas,
}

impl Document {
    async fn fetch(api: &Api) -> Document {
        let doc = api.send(Req::get("/openapi.json")).await.expect(200);
        let mut compiler = boon::Compiler::new();
        compiler.set_default_draft(boon::Draft::V2020_12);
        compiler
            .add_resource(DOCUMENT_URL, doc.clone())
            .expect("the document is a resource");
        Document {
            doc,
            compiler,
            schemas: boon::Schemas::new(),
        }
    }

    /// The reasons `resp`, the answer to `method path` (`path` as the document writes it:
    /// `/v1/clinics/{clinic_id}`), is not what the document says; empty when it is.
    fn mismatches(&mut self, method: &str, path: &str, resp: &Resp) -> Vec<String> {
        let what = format!("{method} {path} -> {}", resp.status);
        let operation = &self.doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        let status = resp.status.to_string();
        let Some(documented) = operation["responses"].get(&status) else {
            return vec![format!("{what}: status not documented")];
        };
        let essence = resp.content_type.split(';').next().unwrap_or("").trim();
        let Some(media) = documented["content"].get(essence) else {
            return vec![format!(
                "{what}: content type {essence:?} not documented ({})",
                documented["content"]
            )];
        };
        if essence != "application/json" || media.get("schema").is_none() {
            return Vec::new();
        }
        let pointer = [
            "paths",
            path,
            method,
            "responses",
            &status,
            "content",
            essence,
        ]
        .iter()
        .map(|part| part.replace('~', "~0").replace('/', "~1"))
        .collect::<Vec<_>>()
        .join("/");
        let location = format!("{DOCUMENT_URL}#/{pointer}/schema");
        let index = self
            .compiler
            .compile(&location, &mut self.schemas)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e:#}"));
        match self.schemas.validate(&resp.json(), index) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!("{what}: {e:#}\nbody: {}", resp.text)],
        }
    }

    /// Asserts `resp` is what the document says of `method path`.
    fn check(&mut self, method: &str, path: &str, resp: &Resp) {
        let mismatches = self.mismatches(method, path, resp);
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }
}

/// The answers Schemathesis found outside their schemas: PUT citizen and PUT vaccine echoed
/// their body with the id added, under a schema (`allOf` of the body's, which forbids other
/// properties) that no answer could match. And a check that can fail: an answer with a field
/// of the wrong type is a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_answers_match_their_schemas() {
    let h = Harness::start().await;
    let mut document = Document::fetch(&h).await;
    let vaccine = h
        .send(
            Req::put("/v1/vaccines/pfz")
                .token(&h.authority)
                .json(&vaccine_body(Some(12))),
        )
        .await;
    document.check("put", "/v1/vaccines/{vaccine}", &vaccine);
    let citizen = h
        .send(Req::put("/v1/citizens/ann").token(&h.authority).json(
            &json!({"birth_date": "1980-05-05", "region": REGION, "allergies": ["peg"],
                    "insurance_id": "I-9", "doses": [{"vaccine": "pfz", "date": "2026-01-02"}]}),
        ))
        .await;
    assert_eq!(citizen.status, 200, "{}", citizen.text);
    document.check("put", "/v1/citizens/{citizen_id}", &citizen);

    // The check can fail: the same answer with a number where a string belongs.
    let mut altered = citizen.clone();
    let mut body = citizen.json();
    body["region"] = json!(7);
    altered.text = body.to_string();
    assert!(
        !document
            .mismatches("put", "/v1/citizens/{citizen_id}", &altered)
            .is_empty(),
        "an altered answer passed"
    );

    let clinic = h
        .send(
            Req::put("/v1/clinics/c-1")
                .token(&h.authority)
                .json(&clinic_body()),
        )
        .await;
    document.check("put", "/v1/clinics/{clinic_id}", &clinic);
    let slot = h
        .put_slot_raw(
            "c-1",
            "s-1",
            &slot_body(hours_from_now(24), hours_from_now(25), 2, &[VACCINE], 0),
        )
        .await;
    document.check("put", "/v1/clinics/{clinic_id}/slots/{slot_id}", &slot);
    let stock = h
        .send(
            Req::post("/v1/clinics/c-1/stock")
                .token(&h.authority)
                .json(&stock_body(VACCINE, "B-1", 5)),
        )
        .await;
    document.check("post", "/v1/clinics/{clinic_id}/stock", &stock);
    let adjusted = h
        .adjust_stock(&h.authority, "c-1", VACCINE, "B-1", -1)
        .await;
    document.check("post", "/v1/clinics/{clinic_id}/stock/adjust", &adjusted);
    let clinics = h.send(Req::get("/v1/clinics?region=north")).await;
    document.check("get", "/v1/clinics", &clinics);
    let availability = h
        .send(Req::get("/v1/clinics/c-1/availability?vaccine=pfz"))
        .await;
    document.check("get", "/v1/clinics/{clinic_id}/availability", &availability);
    h.shutdown().await;
}

/// A booking's life, every answer against its schema: created, confirmed (with its QR
/// token), read, listed by citizen and by clinic, cancelled; and refusals in the error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_s_answers_match_their_schemas() {
    let h = Harness::start().await;
    let mut document = Document::fetch(&h).await;
    h.standard_vaccine(VACCINE).await;
    h.clinic_with_slot("c-1", "s-1", 1, 1).await;
    h.put_adult("ann").await;
    h.put_adult("bob").await;
    let ann = h.citizen_token("ann");
    let created = h
        .book_with(
            &ann,
            &fresh_key("answers"),
            &booking_body("ann", "c-1", "s-1", VACCINE),
        )
        .await;
    document.check("post", "/v1/appointments", &created);
    let id = created.expect(201)["appointment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sold_out = h.book("bob", "c-1", "s-1").await;
    assert_eq!(sold_out.status, 409, "{}", sold_out.text);
    document.check("post", "/v1/appointments", &sold_out);
    let confirmed = h.confirm(&ann, &id).await;
    document.check("post", "/v1/appointments/{id}/confirm", &confirmed);
    let read = h.appointment(&ann, &id).await;
    document.check("get", "/v1/appointments/{id}", &read);
    let listed = h
        .send(Req::get("/v1/citizens/ann/appointments").token(&ann))
        .await;
    document.check("get", "/v1/citizens/{citizen_id}/appointments", &listed);
    let by_clinic = h
        .send(Req::get("/v1/clinics/c-1/appointments?status=CONFIRMED").token(&h.authority))
        .await;
    document.check("get", "/v1/clinics/{clinic_id}/appointments", &by_clinic);
    let cancelled = h.cancel(&ann, &id).await;
    document.check("post", "/v1/appointments/{id}/cancel", &cancelled);
    let too_late = h.confirm(&ann, &id).await;
    assert_eq!(too_late.status, 409, "{}", too_late.text);
    document.check("post", "/v1/appointments/{id}/confirm", &too_late);
    let unauthenticated = h.send(Req::get(format!("/v1/appointments/{id}"))).await;
    document.check("get", "/v1/appointments/{id}", &unauthenticated);
    h.shutdown().await;
}

/// Every operation with a JSON body answers a body of another media type with 415, and the
/// document says so (it did not for eight of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_with_a_body_answers_415_to_another_media_type_as_documented() {
    let h = Harness::start().await;
    let mut document = Document::fetch(&h).await;
    let with_body: Vec<(String, String)> = document.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .filter(|(_, op)| op.get("requestBody").is_some())
                .map(move |(method, _)| (method.clone(), path.clone()))
        })
        .collect();
    assert!(with_body.len() >= 13, "{with_body:?}");
    for (method, path) in with_body {
        let concrete = path
            .replace("{vaccine}", VACCINE)
            .replace("{clinic_id}", "c-1")
            .replace("{slot_id}", "s-1")
            .replace("{citizen_id}", "ann")
            .replace("{id}", "ap-0-1");
        let method_ = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h
            .send(
                Req::new(method_, concrete)
                    .token(&h.authority)
                    .idem(&fresh_key("media"))
                    .raw("text/plain", "{}"),
            )
            .await;
        assert_error_code(&r, 415, "UNSUPPORTED_MEDIA_TYPE");
        document.check(&method, &path, &r);
    }
    h.shutdown().await;
}
