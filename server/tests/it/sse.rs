//! A small Server-Sent Events reader for the stream tests: messages (`id`, `event`, `data`),
//! comments (heartbeats) skipped, every wait bounded.

use std::time::Duration;

use serde_json::Value;

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data {:?}: {e}", self.data))
    }
}

pub struct Sse {
    response: reqwest::Response,
    buffer: String,
}

/// Opens `path` on `base` with `token` (if any) and `Last-Event-ID` (if any); `Err` is the
/// status and body of a refusal.
pub async fn open(
    base: &str,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<u64>,
) -> Result<Sse, (u16, String)> {
    // No total timeout: a stream lasts; each read is bounded in `next`.
    let client = reqwest::Client::new();
    let mut request = client.get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = tokio::time::timeout(Duration::from_secs(10), request.send())
        .await
        .expect("the stream answers within 10 s")
        .expect("the stream request is sent");
    let status = response.status().as_u16();
    if status != 200 {
        return Err((status, response.text().await.unwrap_or_default()));
    }
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Ok(Sse {
        response,
        buffer: String::new(),
    })
}

fn parse(block: &str) -> Option<Msg> {
    let (mut id, mut event, mut data) = (None, String::from("message"), Vec::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    (!data.is_empty() || id.is_some()).then(|| Msg {
        id,
        event,
        data: data.join("\n"),
    })
}

impl Sse {
    /// The next message within `wait`; `None` when none came or the stream ended.
    pub async fn next(&mut self, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(msg) = parse(&block) {
                    return Some(msg);
                }
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Exactly `count` messages, each within `wait`; panics naming how many came.
    pub async fn take(&mut self, count: usize, wait: Duration) -> Vec<Msg> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.next(wait).await {
                Some(msg) => out.push(msg),
                None => panic!("{} of {count} messages came: {out:?}", out.len()),
            }
        }
        out
    }
}
