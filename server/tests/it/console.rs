//! The operator console page over HTTP (docs/API.md, "Operator console"): what the server
//! sends, byte for byte and header by header. What the page does in a browser is
//! `console_browser`.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::common::*;

/// The text of the one bare `<tag>...</tag>` block of `html`.
fn block<'a>(html: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = html.find(&open).unwrap_or_else(|| panic!("no {open}")) + open.len();
    let end = start + html[start..].find(&format!("</{tag}>")).unwrap();
    &html[start..end]
}

fn sha256_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_and_the_root_redirects_to_the_console() {
    let h = Harness::start().await;
    for path in ["/console", "/"] {
        let r = h.send(Req::post(path)).await;
        assert_error_code(&r, 405, "METHOD_NOT_ALLOWED");
    }
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let r = no_redirects.get(h.url("/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 307);
    assert_eq!(r.headers()["location"], "/console");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_uncached_and_allows_only_its_own_inline_code() {
    let h = Harness::start().await;
    // Public: the page holds no data, so it needs no token (what it shows needs one).
    let r = h.send(Req::get("/console")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.content_type, "text/html; charset=utf-8");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    let policy = r.headers["content-security-policy"].to_str().unwrap();
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    // Exactly its own inline script and style, by hash: an injected script would not run.
    let script = format!("script-src {}", sha256_source(block(&r.text, "script")));
    let style = format!("style-src {}", sha256_source(block(&r.text, "style")));
    for wanted in [
        "default-src 'none'",
        script.as_str(),
        style.as_str(),
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(directives.contains(&wanted), "{wanted:?} not in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    // No external asset: nothing loaded from another origin, one script, one style.
    for external in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!r.text.contains(external), "{external} in the page");
    }
    assert_eq!(r.text.matches("<script").count(), 1);
    // It reads the operator contract's own endpoints.
    for path in ["/v1/admin/shards", "/v1/events", "/v1/clinics"] {
        assert!(r.text.contains(&format!("\"{path}\"")), "{path} not read");
    }
    h.shutdown().await;
}
