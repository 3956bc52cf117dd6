//! Each webhook's delivery cursor: the sequence of the last event its receiver acknowledged
//! (a 2xx), kept in the data directory under a stable id of the URL, so a restart resumes
//! right after it: nothing skipped (the cursor moves only after a 2xx) and nothing lost.

use std::collections::HashMap;
use std::sync::Mutex;

use holdfast_persistence::CursorTree;
use sha2::{Digest, Sha256};

/// The sled tree of the log's database that holds the delivery cursors.
pub const CURSOR_TREE: &str = "webhook_cursors";

/// A webhook's stable id: the first 16 bytes of the SHA-256 of its normalised URL, in hex.
/// The same URL keeps its cursor across restarts; a changed URL is a new webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookId(String);

impl WebhookId {
    pub fn of(url: &reqwest::Url) -> WebhookId {
        let digest = Sha256::digest(url.as_str().as_bytes());
        WebhookId(crate::hex::hex(&digest[..16]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where cursors are kept.
pub trait CursorStore: Send + Sync + 'static {
    /// The cursor of `id`; `None` for a webhook never delivered to.
    fn load(&self, id: &WebhookId) -> Result<Option<u64>, String>;
    /// Moves the cursor of `id` (durable at the latest with the next [`CursorStore::flush`]).
    fn save(&self, id: &WebhookId, seq: u64) -> Result<(), String>;
    /// Makes the saved cursors durable. Blocking: call it off the async runtime.
    fn flush(&self) -> Result<(), String>;
}

impl CursorStore for CursorTree {
    fn load(&self, id: &WebhookId) -> Result<Option<u64>, String> {
        self.get(id.as_str().as_bytes()).map_err(|e| e.to_string())
    }

    fn save(&self, id: &WebhookId, seq: u64) -> Result<(), String> {
        self.set(id.as_str().as_bytes(), seq)
            .map_err(|e| e.to_string())
    }

    fn flush(&self) -> Result<(), String> {
        CursorTree::flush(self).map_err(|e| e.to_string())
    }
}

/// Cursors in memory (tests, and a server without a data directory).
#[derive(Default)]
pub struct MemoryCursors(Mutex<HashMap<WebhookId, u64>>);

impl CursorStore for MemoryCursors {
    fn load(&self, id: &WebhookId) -> Result<Option<u64>, String> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied())
    }

    fn save(&self, id: &WebhookId, seq: u64) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), seq);
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_follow_the_normalised_url() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let a = WebhookId::of(&url("http://127.0.0.1:9000/hook"));
        assert_eq!(a, WebhookId::of(&url("http://127.0.0.1:9000/hook")));
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(
            WebhookId::of(&url("http://Example.org")),
            WebhookId::of(&url("http://example.org/"))
        );
        assert_ne!(a, WebhookId::of(&url("http://127.0.0.1:9000/hook2")));
    }
}
