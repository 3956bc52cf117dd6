//! Authentication: HS256 JSON Web Tokens and the [`Caller`] extractor.
//!
//! The JWT code is written here on `hmac`, `sha2` and `base64` rather than taken from a JWT
//! library so that every check the contract names is visible in one place:
//!
//! - exactly three base64url (unpadded) parts;
//! - a header whose `alg` is exactly `HS256`; `none`, `HS512`, a missing `alg` and any other
//!   value are refused, and so is a `crit` header (we understand no extensions);
//! - the signature, compared in constant time, before anything in the payload is believed;
//! - `exp` present, and the token refused once `now > exp + EXP_LEEWAY_S`;
//! - `citizen_id` present for role `citizen`, `clinic_id` for role `staff`.
//!
//! The key is the secret file's bytes with one trailing `\n` removed, so `echo secret > f`
//! and `printf secret > f` give the same key. Every failure is a 401 `UNAUTHENTICATED`; a
//! valid token with the wrong role is a 403 `FORBIDDEN` from [`Caller::require_role`].

use crate::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

/// Seconds a token is still accepted after its `exp`, to absorb clock skew between the
/// issuer and this server. The contract allows no more than 5.
pub const EXP_LEEWAY_S: i64 = 5;

/// Random bytes in a generated secret: 256 bits, the size of SHA-256's output, which RFC 7518
/// (section 3.2) sets as the minimum key size for HS256.
const GENERATED_SECRET_BYTES: usize = 32;

/// The one header we issue and the one we accept: `{"alg":"HS256","typ":"JWT"}`.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

type HmacSha256 = Hmac<Sha256>;

/// What a caller may do; `role` in the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Books, confirms, cancels and reads its own appointments.
    Citizen,
    /// Works at one clinic (`clinic_id`): reads and administers its appointments.
    Staff,
    /// Manages the catalogue, slots, stock and citizens; reads everything.
    Authority,
    /// Reads the admin endpoints, the event stream and the metrics.
    Operator,
}

impl Role {
    /// The name used in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Staff => "staff",
            Role::Authority => "authority",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of a holdfast token. Claims we do not know (`iat`, `iss`, ...) are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the caller is; idempotency keys are scoped to it.
    pub sub: String,
    /// What the caller may do.
    pub role: Role,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Required for role `citizen`: the only citizen whose appointments it may touch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citizen_id: Option<String>,
    /// Required for role `staff`: the only clinic it works for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_id: Option<String>,
}

/// Why a token was refused. Every variant is a 401 `UNAUTHENTICATED`.
///
/// The messages say what was wrong with the token so a client developer can fix it; none of
/// them contains the key or anything derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header.
    MissingToken,
    /// An `Authorization` header that is not `Bearer <token>`.
    NotBearer,
    /// Not three base64url parts of JSON; says which part is wrong.
    Malformed(&'static str),
    /// The header's `alg` is not exactly `HS256`, or it names critical extensions.
    UnsupportedAlgorithm,
    /// The signature does not match: forged, altered, or signed with another key.
    BadSignature,
    /// The payload is not a valid set of claims (e.g. no `exp`, unknown `role`).
    InvalidClaims(String),
    /// `exp` plus the leeway has passed.
    Expired {
        /// The token's `exp`, unix seconds.
        exp: i64,
    },
    /// A claim the role requires is missing or empty.
    MissingRoleClaim {
        /// The token's role.
        role: Role,
        /// The claim it lacks.
        claim: &'static str,
    },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::MissingToken => f.write_str("missing Authorization: Bearer <token> header"),
            AuthError::NotBearer => f.write_str("the Authorization header must be Bearer <token>"),
            AuthError::Malformed(what) => write!(f, "malformed token: {what}"),
            AuthError::UnsupportedAlgorithm => {
                f.write_str("unsupported token algorithm: only alg HS256 is accepted")
            }
            AuthError::BadSignature => f.write_str("token signature does not verify"),
            AuthError::InvalidClaims(why) => write!(f, "invalid token claims: {why}"),
            AuthError::Expired { exp } => write!(f, "token expired (exp {exp})"),
            AuthError::MissingRoleClaim { role, claim } => {
                write!(f, "a token with role {role} must carry {claim}")
            }
        }
    }
}

impl std::error::Error for AuthError {}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        ApiError::unauthenticated(err.to_string())
    }
}

/// The HS256 signing and verifying key.
///
/// Holds the HMAC state already keyed, so each sign or verify clones it instead of hashing the
/// key again.
#[derive(Clone)]
pub struct JwtKey {
    mac: HmacSha256,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key, not even in debug logs.
        f.write_str("JwtKey(<redacted>)")
    }
}

impl JwtKey {
    /// The key from the contents of `--jwt-secret-file`: its bytes, with exactly one trailing
    /// `\n` removed if present (a `\r` before it stays; so does a second `\n`). An empty key
    /// is refused: it would let anyone sign.
    pub fn from_secret_file_bytes(bytes: &[u8]) -> Result<JwtKey, String> {
        let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if secret.is_empty() {
            return Err("the JWT secret file is empty".to_owned());
        }
        let mac = HmacSha256::new_from_slice(secret)
            .map_err(|err| format!("unusable JWT secret: {err}"))?;
        Ok(JwtKey { mac })
    }

    /// A signed token carrying `claims`. Checks nothing: the `holdfast token` command and the
    /// demo mode decide what they sign.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER_JSON);
        let payload_json = serde_json::to_vec(claims).expect("claims always serialise");
        let payload = URL_SAFE_NO_PAD.encode(payload_json);
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac.clone();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The claims of `token` if every check in the module documentation passes at
    /// `now_unix_s`.
    pub fn verify(&self, token: &str, now_unix_s: i64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("expected three dot-separated parts"));
        };

        // The header decides which algorithm the rest is checked with; we accept exactly one,
        // so it is checked first and an attacker cannot pick `none` or another MAC.
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&header_json)
                .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
        if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256")
            || header.contains_key("crit")
        {
            return Err(AuthError::UnsupportedAlgorithm);
        }

        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let mut mac = self.mac.clone();
        mac.update(header_b64.as_bytes());
        mac.update(b".");
        mac.update(payload_b64.as_bytes());
        // verify_slice compares in constant time, so the answer time leaks nothing about how
        // much of a forged signature was right.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;

        // Only now, with the signature checked, is the payload ours to believe.
        let payload_json = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .map_err(|_| AuthError::Malformed("payload is not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload_json)
            .map_err(|err| AuthError::InvalidClaims(err.to_string()))?;

        if now_unix_s > claims.exp.saturating_add(EXP_LEEWAY_S) {
            return Err(AuthError::Expired { exp: claims.exp });
        }
        let required = match claims.role {
            Role::Citizen => Some(("citizen_id", &claims.citizen_id)),
            Role::Staff => Some(("clinic_id", &claims.clinic_id)),
            Role::Authority | Role::Operator => None,
        };
        if let Some((claim, value)) = required {
            if value.as_deref().is_none_or(str::is_empty) {
                return Err(AuthError::MissingRoleClaim {
                    role: claims.role,
                    claim,
                });
            }
        }
        Ok(claims)
    }
}

/// A fresh secret for `serve --demo`: 32 random bytes, hex-encoded so the file is printable
/// ASCII and survives copy and paste. The hex text itself is the key.
///
/// # Panics
///
/// If the operating system's random number generator is unavailable: there is no safe
/// fallback for a signing key.
pub fn generate_secret() -> Vec<u8> {
    let mut random = [0u8; GENERATED_SECRET_BYTES];
    getrandom::fill(&mut random).expect("the OS random number generator is unavailable");
    random
        .iter()
        .flat_map(|byte| {
            let hex = b"0123456789abcdef";
            [hex[usize::from(byte >> 4)], hex[usize::from(byte & 0x0f)]]
        })
        .collect()
}

/// The verified claims of the request's bearer token.
///
/// Extracting it answers 401 when the token is missing or invalid. The key comes from the
/// router's state through `FromRef<S> for Arc<JwtKey>`.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    /// `Ok` when the caller has one of `roles`, else 403 `FORBIDDEN` listing them.
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            return Ok(());
        }
        Err(
            ApiError::forbidden(format!("role {} may not use this endpoint", self.0.role))
                .with_detail("role", self.0.role)
                .with_detail("allowed_roles", roles),
        )
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<JwtKey>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // Verified already by the rate limits' middleware (crate::admission::middleware::limit).
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let key = Arc::<JwtKey>::from_ref(state);
        let token = bearer_token(parts)?;
        let now_unix_s = chrono::Utc::now().timestamp();
        Ok(Caller(key.verify(token, now_unix_s)?))
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    // Two Authorization headers are ambiguous; which one a proxy honoured is unknowable.
    if values.next().is_some() {
        return Err(AuthError::Malformed("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    const NOW: i64 = 1_800_000_000;

    fn key(secret: &[u8]) -> JwtKey {
        JwtKey::from_secret_file_bytes(secret).unwrap()
    }

    fn authority(exp: i64) -> Claims {
        Claims {
            sub: "alice".to_owned(),
            role: Role::Authority,
            exp,
            citizen_id: None,
            clinic_id: None,
        }
    }

    fn citizen(citizen_id: Option<&str>) -> Claims {
        Claims {
            sub: "bob".to_owned(),
            role: Role::Citizen,
            exp: NOW + 3600,
            citizen_id: citizen_id.map(str::to_owned),
            clinic_id: None,
        }
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// A token with an arbitrary header, signed with HMAC-SHA256 under `secret`.
    fn token_with_header(header: &str, claims: &Claims, secret: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            b64(header),
            b64(&serde_json::to_string(claims).unwrap())
        );
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let key = key(b"s3cret");
        let claims = Claims {
            sub: "st-1".to_owned(),
            role: Role::Staff,
            exp: NOW + 60,
            citizen_id: None,
            clinic_id: Some("clinic-7".to_owned()),
        };
        let verified = key.verify(&key.sign(&claims), NOW).unwrap();
        assert_eq!(verified.sub, "st-1");
        assert_eq!(verified.role, Role::Staff);
        assert_eq!(verified.exp, NOW + 60);
        assert_eq!(verified.clinic_id.as_deref(), Some("clinic-7"));
        assert_eq!(verified.citizen_id, None);
    }

    #[test]
    fn token_parts_are_unpadded_base64url_with_the_hs256_header() {
        let token = key(b"k").sign(&authority(NOW));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, HEADER_JSON.as_bytes());
    }

    #[test]
    fn tampered_payload_is_refused() {
        let key = key(b"s3cret");
        let token = key.sign(&citizen(Some("c-1")));
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = b64(&serde_json::to_string(&authority(NOW + 3600)).unwrap());
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            key.verify(&forged, NOW).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn another_key_is_refused() {
        let token = key(b"one").sign(&authority(NOW + 60));
        assert_eq!(
            key(b"two").verify(&token, NOW).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let claims = serde_json::to_string(&authority(NOW + 3600)).unwrap();
        let token = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        assert_eq!(
            key(b"k").verify(&token, NOW).unwrap_err(),
            AuthError::UnsupportedAlgorithm
        );
    }

    #[test]
    fn other_algorithms_and_a_missing_alg_are_refused_even_when_correctly_signed() {
        // Signed with the right key, so only the header check can refuse them.
        for header in [
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
        ] {
            let token = token_with_header(header, &authority(NOW + 60), b"k");
            assert_eq!(
                key(b"k").verify(&token, NOW).unwrap_err(),
                AuthError::UnsupportedAlgorithm,
                "{header}"
            );
        }
        // The same construction with the accepted header verifies, so the loop above is not
        // passing by accident.
        let token = token_with_header(r#"{"alg":"HS256"}"#, &authority(NOW + 60), b"k");
        assert!(key(b"k").verify(&token, NOW).is_ok());
    }

    #[test]
    fn expiry_allows_exactly_the_leeway() {
        let key = key(b"k");
        let token = key.sign(&authority(NOW));
        assert!(key.verify(&token, NOW).is_ok());
        assert!(key.verify(&token, NOW + EXP_LEEWAY_S).is_ok());
        assert_eq!(
            key.verify(&token, NOW + EXP_LEEWAY_S + 1).unwrap_err(),
            AuthError::Expired { exp: NOW }
        );
        assert!(key.verify(&token, NOW + 3600).is_err());
        // An absurd exp must not overflow into "expired long ago" or panic.
        assert!(key.verify(&key.sign(&authority(i64::MAX)), NOW).is_ok());
    }

    #[test]
    fn exp_is_required() {
        let payload = r#"{"sub":"a","role":"authority"}"#;
        let mut mac = HmacSha256::new_from_slice(b"k").unwrap();
        let input = format!("{}.{}", b64(HEADER_JSON), b64(payload));
        mac.update(input.as_bytes());
        let token = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert!(matches!(
            key(b"k").verify(&token, NOW),
            Err(AuthError::InvalidClaims(_))
        ));
    }

    #[test]
    fn citizen_needs_citizen_id_and_staff_needs_clinic_id() {
        let key = key(b"k");
        for claims in [citizen(None), citizen(Some(""))] {
            assert_eq!(
                key.verify(&key.sign(&claims), NOW).unwrap_err(),
                AuthError::MissingRoleClaim {
                    role: Role::Citizen,
                    claim: "citizen_id"
                }
            );
        }
        assert!(key.verify(&key.sign(&citizen(Some("c-1"))), NOW).is_ok());
        let staff = Claims {
            role: Role::Staff,
            ..authority(NOW + 60)
        };
        assert_eq!(
            key.verify(&key.sign(&staff), NOW).unwrap_err(),
            AuthError::MissingRoleClaim {
                role: Role::Staff,
                claim: "clinic_id"
            }
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let key = key(b"k");
        let good = key.sign(&authority(NOW + 60));
        for token in [
            "",
            "abc",
            "a.b",
            &format!("{good}.extra"),
            &good.replacen('.', ".!", 1),
            &format!("{good}="),
        ] {
            assert!(key.verify(token, NOW).is_err(), "{token:?}");
        }
    }

    #[test]
    fn secret_file_loses_exactly_one_trailing_newline() {
        let token = key(b"abc").sign(&authority(NOW + 60));
        assert!(key(b"abc\n").verify(&token, NOW).is_ok());
        assert!(key(b"abc\n\n").verify(&token, NOW).is_err());
        assert!(key(b"abc\r\n").verify(&token, NOW).is_err());
        assert!(JwtKey::from_secret_file_bytes(b"").is_err());
        assert!(JwtKey::from_secret_file_bytes(b"\n").is_err());
    }

    #[test]
    fn debug_output_does_not_show_the_key() {
        assert!(!format!("{:?}", key(b"hunter2")).contains("hunter2"));
    }

    #[test]
    fn generated_secrets_are_random_printable_and_usable() {
        let first = generate_secret();
        assert_eq!(first.len(), 2 * GENERATED_SECRET_BYTES);
        assert!(first.iter().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, generate_secret());
        let key = key(&first);
        assert!(key.verify(&key.sign(&authority(NOW)), NOW).is_ok());
    }

    #[test]
    fn auth_errors_are_401_and_roles_403() {
        let err = ApiError::from(AuthError::BadSignature);
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert_eq!(err.code, "UNAUTHENTICATED");

        let caller = Caller(citizen(Some("c-1")));
        assert!(caller.require_role(&[Role::Citizen, Role::Staff]).is_ok());
        let err = caller
            .require_role(&[Role::Authority, Role::Operator])
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert_eq!(err.code, "FORBIDDEN");
        assert_eq!(
            err.details["allowed_roles"],
            serde_json::json!(["authority", "operator"])
        );
    }

    #[derive(Clone)]
    struct State {
        key: Arc<JwtKey>,
    }

    impl FromRef<State> for Arc<JwtKey> {
        fn from_ref(state: &State) -> Arc<JwtKey> {
            state.key.clone()
        }
    }

    async fn whoami(authorization: Option<&str>) -> (StatusCode, serde_json::Value) {
        let state = State {
            key: Arc::new(key(b"k")),
        };
        let router = Router::new()
            .route(
                "/me",
                get(|Caller(claims): Caller| async move { claims.sub }),
            )
            .with_state(state);
        let mut request = Request::get("/me");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    #[tokio::test]
    async fn caller_extractor_accepts_a_valid_bearer_token() {
        let now = chrono::Utc::now().timestamp();
        let token = key(b"k").sign(&authority(now + 60));
        for scheme in ["Bearer", "bearer"] {
            let (status, _) = whoami(Some(&format!("{scheme} {token}"))).await;
            assert_eq!(status, StatusCode::OK, "{scheme}");
        }
    }

    #[tokio::test]
    async fn caller_extractor_answers_401_in_the_error_shape() {
        let now = chrono::Utc::now().timestamp();
        let expired = key(b"k").sign(&authority(now - 60));
        let foreign = key(b"other").sign(&authority(now + 60));
        let valid = key(b"k").sign(&authority(now + 60));
        for authorization in [
            None,
            Some(format!("Basic {valid}")),
            Some(valid.clone()),
            Some("Bearer ".to_owned()),
            Some(format!("Bearer {expired}")),
            Some(format!("Bearer {foreign}")),
        ] {
            let (status, body) = whoami(authorization.as_deref()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{authorization:?}");
            assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
            assert!(body["error"]["details"].is_object());
        }
    }
}
