//! The operator console: one read-only HTML page at `GET /console` (and `GET /`, which
//! redirects there) that shows live shard status, bookings per second, the latest events and
//! availability by clinic.
//!
//! The page is `console.html` beside this file, embedded at compile time: no build step, no
//! external assets (its CSS and JS are inline; it loads no font, script or image from
//! anywhere). It holds no data itself: in the browser it reads `GET /v1/admin/shards` and
//! `GET /v1/events` with the operator token the operator pastes into it, and the public `GET
//! /v1/clinics`, exactly as any other client of docs/API.md would. So the page route is public
//! and every answer it shows is checked with the token as usual.
//!
//! The answer carries a strict Content-Security-Policy that allows the page's own inline
//! `<script>` and `<style>` by their SHA-256 hashes (computed once from the embedded text, so
//! they cannot go stale) and nothing else: no other script, no `eval`, connections only to
//! this origin, no framing. A hash rather than a nonce because the page is the same bytes on
//! every answer. `Cache-Control: no-store` keeps an old page from outliving the binary that
//! served it.

use std::sync::LazyLock;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Redirect};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The page, as written in `console.html`. Its inline blocks must be bare `<script>` and
/// `<style>` tags (no attributes): that is how [`content_security_policy`] finds them.
pub const CONSOLE_HTML: &str = include_str!("console.html");

/// Where `GET /` sends a browser.
pub const CONSOLE_PATH: &str = "/console";

/// The policy sent with the page (see the module's doc).
static CONSOLE_CSP: LazyLock<String> = LazyLock::new(|| content_security_policy(CONSOLE_HTML));

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(console_page))
        .routes(routes!(root))
}

/// The operator console (HTML). Public: the page holds no data; what it shows it reads with
/// the operator token pasted into it.
#[utoipa::path(get, path = "/console", tag = "operators",
    responses((status = 200, content_type = "text/html",
        description = "the operator console page, with a Content-Security-Policy and Cache-Control: no-store")))]
async fn console_page() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-store"),
            (CONTENT_SECURITY_POLICY, CONSOLE_CSP.as_str()),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
        ],
        CONSOLE_HTML,
    )
}

/// The root sends a browser to the console (307, so a later build may serve something else
/// here without browsers having cached a permanent redirect).
#[utoipa::path(get, path = "/", tag = "operators",
    responses((status = 307, description = "redirects to /console")))]
async fn root() -> impl IntoResponse {
    (
        [(CACHE_CONTROL, "no-store")],
        Redirect::temporary(CONSOLE_PATH),
    )
}

/// The Content-Security-Policy of `html`: its inline `<script>` and `<style>` blocks allowed by
/// hash, everything else denied but fetches to this origin.
pub fn content_security_policy(html: &str) -> String {
    let sources = |tag: &str| -> String {
        inline_blocks(html, tag)
            .into_iter()
            .map(|block| {
                let digest = Sha256::digest(block.as_bytes());
                format!(
                    " 'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect()
    };
    format!(
        "default-src 'none'; script-src{}; style-src{}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sources("script"),
        sources("style"),
    )
}

/// The text between each bare `<tag>` and the next `</tag>`, byte for byte (what a browser
/// hashes for CSP).
fn inline_blocks<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut blocks = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else { break };
        blocks.push(&body[..end]);
        rest = &body[end + close.len()..];
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_inline_blocks_by_hash() {
        let html = "<style>b{}</style><p>x</p><script>let a = 1;</script>";
        let policy = content_security_policy(html);
        let hash = |text: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
        };
        assert!(
            policy.contains(&format!("script-src 'sha256-{}';", hash("let a = 1;"))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src 'sha256-{}';", hash("b{}"))),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }

    #[test]
    fn the_page_has_one_inline_script_and_style_and_no_external_assets() {
        assert_eq!(inline_blocks(CONSOLE_HTML, "script").len(), 1);
        assert_eq!(inline_blocks(CONSOLE_HTML, "style").len(), 1);
        // Any other <script ...> or <style ...> (with attributes, e.g. `src`) would be
        // blocked by the policy: the page must not have one.
        assert_eq!(CONSOLE_HTML.matches("<script").count(), 1);
        assert_eq!(CONSOLE_HTML.matches("<style").count(), 1);
        for external in ["http://", "https://", "src=", "@import", "url("] {
            assert!(
                !CONSOLE_HTML.contains(external),
                "the console refers to an external asset: {external}"
            );
        }
    }
}
