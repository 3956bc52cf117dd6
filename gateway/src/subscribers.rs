//! The bounds on the Server-Sent Events streams' subscribers (`GET /v1/events` and the
//! clinics' availability streams, [`crate::routes::streams`]): places per node and per
//! clinic, taken when a stream opens and given back when its subscriber goes; past a bound
//! the answer is 503 `UNAVAILABLE` with `Retry-After`. Kept apart from the routes so the
//! application state can hold them without depending on the routes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// `GET /v1/events` subscribers at once per node: each holds a task and a queue of
/// [`crate::routes::streams::events::SSE_SUBSCRIBER_QUEUE_EVENTS`] (about 250 KiB), so 64 are about 16 MiB at most.
/// Consumers are pipelines and dashboards, a handful per campaign.
pub const EVENT_SUBSCRIBERS_MAX: usize = 64;
/// Availability stream subscribers at once per node (public: citizens' pages). Each is a
/// task and a queue of [`crate::routes::streams::availability::AVAILABILITY_QUEUE_MESSAGES`] messages.
pub const AVAILABILITY_SUBSCRIBERS_MAX: usize = 4_096;
/// Availability stream subscribers at once per clinic, so one popular clinic cannot take
/// every place of the node.
pub const AVAILABILITY_SUBSCRIBERS_PER_CLINIC_MAX: usize = 512;
/// Seconds a client refused at a bound is asked to wait (`Retry-After`).
pub const STREAM_RETRY_AFTER_S: u32 = 5;

/// The places of the streams' subscribers.
pub struct StreamLimits {
    events: Arc<Semaphore>,
    availability: Arc<Semaphore>,
    per_clinic: Arc<Mutex<HashMap<String, usize>>>,
    per_clinic_max: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits::new(
            EVENT_SUBSCRIBERS_MAX,
            AVAILABILITY_SUBSCRIBERS_MAX,
            AVAILABILITY_SUBSCRIBERS_PER_CLINIC_MAX,
        )
    }
}

/// One place in the availability streams, given back when the subscriber goes.
#[derive(Debug)]
pub struct ClinicPlace {
    _node: OwnedSemaphorePermit,
    clinic_id: String,
    per_clinic: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ClinicPlace {
    fn drop(&mut self) {
        let mut counts = self.per_clinic.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.clinic_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.clinic_id);
            }
        }
    }
}

fn full(what: &str, max: usize) -> ApiError {
    ApiError::unavailable(
        STREAM_RETRY_AFTER_S,
        format!("{what} has its {max} subscribers; retry later"),
    )
    .with_detail("subscribers_max", max)
}

impl StreamLimits {
    pub fn new(events: usize, availability: usize, per_clinic_max: usize) -> Self {
        StreamLimits {
            events: Arc::new(Semaphore::new(events)),
            availability: Arc::new(Semaphore::new(availability)),
            per_clinic: Arc::default(),
            per_clinic_max,
        }
    }

    /// A place for an event stream subscriber, or 503 `UNAVAILABLE`.
    pub fn event_subscriber(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.events
            .clone()
            .try_acquire_owned()
            .map_err(|_| full("the event stream", EVENT_SUBSCRIBERS_MAX))
    }

    /// A place for an availability subscriber of `clinic_id`, or 503 `UNAVAILABLE`.
    pub fn clinic_subscriber(&self, clinic_id: &str) -> Result<ClinicPlace, ApiError> {
        let node = self
            .availability
            .clone()
            .try_acquire_owned()
            .map_err(|_| full("the availability stream", AVAILABILITY_SUBSCRIBERS_MAX))?;
        let mut counts = self.per_clinic.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(clinic_id.to_string()).or_default();
        if *count >= self.per_clinic_max {
            return Err(full(
                "this clinic's availability stream",
                self.per_clinic_max,
            ));
        }
        *count += 1;
        Ok(ClinicPlace {
            _node: node,
            clinic_id: clinic_id.to_string(),
            per_clinic: self.per_clinic.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_bounded_per_node_and_per_clinic_and_places_come_back() {
        let limits = StreamLimits::new(1, 3, 2);
        let first = limits.event_subscriber().unwrap();
        assert_eq!(limits.event_subscriber().unwrap_err().code, "UNAVAILABLE");
        drop(first);
        assert!(limits.event_subscriber().is_ok());
        let a = limits.clinic_subscriber("k1").unwrap();
        let _b = limits.clinic_subscriber("k1").unwrap();
        assert_eq!(
            limits.clinic_subscriber("k1").unwrap_err().code,
            "UNAVAILABLE"
        );
        let _c = limits.clinic_subscriber("k2").unwrap();
        // The node's three places are taken.
        assert!(limits.clinic_subscriber("k3").is_err());
        drop(a);
        assert!(limits.clinic_subscriber("k1").is_ok());
    }
}
