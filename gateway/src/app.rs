//! The application: the router with its OpenAPI document. The state it serves lives in
//! [`crate::state`] (re-exported here), the handlers in [`crate::routes`].

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ErrorBody;
use crate::overload::Overload;
use crate::routes;
pub use crate::state::{AppState, Settings};

#[derive(OpenApi)]
#[openapi(
    info(title = "holdfast", description = "Reservation engine for scarce, time-bound inventory: the HTTP API (v1)."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route, registered through `OpenApiRouter` so the document cannot drift from them.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::catalogue::router())
        .merge(routes::booking::router())
        .merge(routes::clinic::router())
        .merge(routes::waitlist::router())
        .merge(routes::queue::router())
        .merge(routes::ops::router())
        .merge(routes::streams::router())
        .merge(routes::audit::router())
        .merge(routes::console::router())
}

/// The whole application: routes, the OpenAPI document at `/openapi.json`, fallbacks that
/// answer 404/405 in the error shape, and around all of them the request's id, span, log line
/// and metrics ([`crate::telemetry`]).
pub fn build_app(state: AppState) -> axum::Router {
    let (router, openapi) = parts();
    let overload = Arc::new(Overload::new(state.settings.overload));
    router
        .layer(axum::Extension(Arc::new(openapi)))
        .fallback(crate::error::not_found_fallback)
        // Last: axum applies it only to routes that exist when it is called.
        .method_not_allowed_fallback(crate::error::method_not_allowed_fallback)
        // The node-wide bound on requests in flight (503 under overload), inside the
        // telemetry so refusals are logged and counted like any answer, and inside the rate
        // limits: a request they refuse never takes a permit.
        .layer(axum::middleware::from_fn_with_state(
            overload,
            crate::overload::admit,
        ))
        // Inside the telemetry, so a 429 is counted and logged like any answer.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admission::middleware::limit,
        ))
        // After routing (so `MatchedPath` is known) and around the fallbacks too.
        .layer(axum::middleware::from_fn(crate::telemetry::observe))
        .with_state(state)
}

/// The OpenAPI document, for tests and tools.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The routes and their document, completed with what every operation shares
/// ([`crate::contract`]) and the overload `503` of every bounded operation.
fn parts() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = api_router().split_for_parts();
    crate::contract::complete(&mut openapi);
    (router, with_overload(openapi))
}

/// Every operation the in-flight bound covers ([`crate::overload::is_bounded`]) can answer
/// `503 UNAVAILABLE` with `Retry-After`: said once here rather than on every handler.
fn with_overload(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let refused = ResponseBuilder::new()
        .description("UNAVAILABLE, with Retry-After: overloaded (the node's bound on requests in flight), or a shard not ready")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !crate::overload::is_bounded(path) {
            continue;
        }
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("503".to_string())
                .or_insert_with(|| refused.clone().into());
        }
    }
    openapi
}
