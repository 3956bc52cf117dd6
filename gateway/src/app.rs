//! The application: the router with its OpenAPI document. The state it serves lives in
//! [`crate::state`] (re-exported here), the handlers in [`crate::routes`].

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::error::ErrorBody;
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
    router
        .layer(axum::Extension(Arc::new(openapi)))
        .fallback(crate::error::not_found_fallback)
        // Last: axum applies it only to routes that exist when it is called.
        .method_not_allowed_fallback(crate::error::method_not_allowed_fallback)
        // After routing (so `MatchedPath` is known) and around the fallbacks too.
        .layer(axum::middleware::from_fn(crate::telemetry::observe))
        .with_state(state)
}

/// The OpenAPI document, for tests and tools.
pub fn openapi() -> utoipa::openapi::OpenApi {
    parts().1
}

/// The routes and their document, completed with what every operation shares
/// ([`crate::contract`]).
fn parts() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = api_router().split_for_parts();
    crate::contract::complete(&mut openapi);
    (router, openapi)
}
