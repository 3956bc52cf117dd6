//! The rate limits' middleware ([`limit`]): on a [`LIMITED_ROUTES`] route, the client IP's
//! bucket, then the caller's. Apart from the admission state it reads, so that state can live
//! in the application state without the two depending on each other.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::LIMITED_ROUTES;
use crate::auth::Caller;
use crate::state::AppState;

/// The middleware of the rate limits: on a [`LIMITED_ROUTES`] route, the client IP's bucket,
/// then (with a valid token) the caller's; a refusal is answered here. A verified caller is
/// left in the request's extensions, so the handler does not verify its token again.
pub async fn limit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let admission = &state.admission;
    if (admission.by_ip.is_none() && admission.by_caller.is_none()) || !is_limited(&request) {
        return next.run(request).await;
    }
    if let (Some(limiter), Some(ip)) = (&admission.by_ip, client_ip(&request)) {
        if let Err(retry) = limiter.check(&ip) {
            return admission.rate_limited(retry, "client IP").into_response();
        }
    }
    if let Some(limiter) = &admission.by_caller {
        let (mut parts, body) = request.into_parts();
        // A request without a valid token is not limited by caller: the handler answers it
        // 401 (and the IP's bucket has counted it).
        if let Ok(caller) = Caller::from_request_parts(&mut parts, &state).await {
            if let Err(retry) = limiter.check(caller.0.sub.as_str()) {
                return admission.rate_limited(retry, "caller").into_response();
            }
            parts.extensions.insert(caller);
        }
        request = Request::from_parts(parts, body);
    }
    next.run(request).await
}

fn is_limited(request: &Request) -> bool {
    let Some(path) = request.extensions().get::<MatchedPath>() else {
        return false;
    };
    LIMITED_ROUTES
        .iter()
        .any(|(method, route)| method == request.method() && *route == path.as_str())
}

/// The TCP peer's address, IPv6 reduced to its /64 (see the module documentation); `None`
/// when the server was not started with connection info (in-process router tests).
fn client_ip(request: &Request) -> Option<IpAddr> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(match peer.ip().to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Method;

    fn from(peer: &str) -> Option<IpAddr> {
        let mut request = Request::new(Body::empty());
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        client_ip(&request)
    }

    #[test]
    fn the_client_ip_is_the_peer_and_ipv6_counts_per_64() {
        assert_eq!(from("203.0.113.9:5000"), "203.0.113.9".parse().ok());
        // One /64 is one key, whatever the host part.
        assert_eq!(
            from("[2001:db8:1:2:aaaa::1]:80"),
            "2001:db8:1:2::".parse().ok()
        );
        assert_eq!(
            from("[2001:db8:1:2:bbbb::7]:80"),
            "2001:db8:1:2::".parse().ok()
        );
        assert_ne!(from("[2001:db8:1:3::1]:80"), from("[2001:db8:1:2::1]:80"));
        // An IPv4 peer seen through an IPv6 socket is the IPv4 address.
        assert_eq!(
            from("[::ffff:198.51.100.4]:80"),
            "198.51.100.4".parse().ok()
        );
        assert_eq!(client_ip(&Request::new(Body::empty())), None);
    }

    #[test]
    fn limited_routes_are_the_citizens_mutating_ones() {
        let reads = LIMITED_ROUTES
            .iter()
            .filter(|(m, _)| m == Method::GET)
            .count();
        assert_eq!(reads, 0);
        assert!(LIMITED_ROUTES.contains(&(Method::POST, "/v1/queue")));
    }
}
