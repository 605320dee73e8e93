//! Access tokens (`[plugin.NAME.auth]`): a JWT the application's backend signs, checked
//! by the host before any guest code runs. The token comes from `Authorization: Bearer`,
//! `?token=`, a named cookie, or a `wasmroom.token.<JWT>` subprotocol (browsers cannot
//! set headers on a WebSocket). Its signature, algorithm, `exp`/`nbf` (with leeway),
//! `aud` (the plugin's name unless configured otherwise) and document claim are checked;
//! the claims then reach the consumer through `context.claims` (WebSockets) and the
//! `x-wasmroom-claims` header (HTTP). The token itself never does: consumers are not
//! trusted with a credential a client could replay ([`hide_credentials`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{Config, ConfigError, ResolvedAuth, TokenAlgorithm};
use crate::net::http::RequestHead;

mod hide;

pub use hide::{CLAIMS_HEADER, hide_credentials};

/// The subprotocol prefix that carries a token: `wasmroom.token.<JWT>`.
pub const TOKEN_SUBPROTOCOL: &str = "wasmroom.token.";

/// The query parameter that carries a token: `?token=<JWT>`.
const TOKEN_PARAMETER: &str = "token";

/// Why a request was refused (401). The text is the one-line answer the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No token: send one in `Authorization: Bearer`, `?token=`, the configured cookie or
    /// a `wasmroom.token.<JWT>` subprotocol.
    #[error("access token required")]
    Missing,
    /// The token did not verify (the reason says which check failed): mint a new one.
    #[error("invalid access token: {0}")]
    Invalid(&'static str),
    /// The token's `aud` does not hold the one this plugin expects (by default the
    /// plugin's name), or it has none: mint it for this plugin.
    #[error("invalid access token: wrong audience (aud must be {0:?})")]
    WrongAudience(Arc<str>),
    /// The token is valid but names other documents: mint one for this document.
    #[error("access token is not for this document")]
    WrongDocument,
}

/// A request whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The token's claims as JSON text, for the consumer.
    pub claims: Arc<str>,
    /// The subprotocol that carried the token, if that is how it came.
    pub subprotocol: Option<String>,
}

/// Checks one plugin's tokens.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// The `aud` a token must carry, for the refusal's text; `None`: not checked.
    audience: Option<Arc<str>>,
    document_claim: String,
    cookie: Option<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("document_claim", &self.document_claim)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for `auth`; fails when the key is not a PEM key of its algorithm.
    pub fn new(auth: &ResolvedAuth) -> Result<TokenVerifier, String> {
        let (key, algorithm) = match auth.algorithm {
            TokenAlgorithm::Hs256 => (
                DecodingKey::from_secret(&auth.key).map_err(|e| format!("unusable secret: {e}")),
                Algorithm::HS256,
            ),
            TokenAlgorithm::EdDsa => (
                DecodingKey::from_ed_pem(&auth.key)
                    .map_err(|e| format!("not an Ed25519 public key in PEM: {e}")),
                Algorithm::EdDSA,
            ),
            TokenAlgorithm::Rs256 => (
                DecodingKey::from_rsa_pem(&auth.key)
                    .map_err(|e| format!("not an RSA public key in PEM: {e}")),
                Algorithm::RS256,
            ),
        };
        let key = key?;
        // One algorithm only: a token may not pick a weaker one (or `none`).
        let mut validation = Validation::new(algorithm);
        validation.leeway = auth.leeway_secs;
        validation.validate_nbf = true;
        match &auth.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                // Else a token without `aud` would pass: the check runs only on one
                // that has the claim.
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => {
                validation.set_required_spec_claims(&["exp"]);
                validation.validate_aud = false;
            }
        }
        Ok(TokenVerifier {
            key,
            validation,
            audience: auth.audience.as_deref().map(Arc::from),
            document_claim: auth.document_claim.clone(),
            cookie: auth.cookie.clone(),
        })
    }

    /// Verifies the token `head` carries for `document`.
    pub fn check(&self, head: &RequestHead, document: &str) -> Result<Admitted, AccessError> {
        let (token, subprotocol) = self.token_in(head).ok_or(AccessError::Missing)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| self.refusal(e.kind()))?;
        if !names_document(data.claims.get(&self.document_claim), document) {
            return Err(AccessError::WrongDocument);
        }
        let claims = Value::Object(data.claims).to_string();
        Ok(Admitted {
            claims: claims.into(),
            subprotocol,
        })
    }

    /// Why a token that did not verify is refused.
    fn refusal(&self, kind: &ErrorKind) -> AccessError {
        let about_audience = match kind {
            ErrorKind::InvalidAudience => true,
            ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => c == "aud",
            _ => false,
        };
        match &self.audience {
            Some(expected) if about_audience => AccessError::WrongAudience(expected.clone()),
            _ => AccessError::Invalid(reason(kind)),
        }
    }

    /// The token and, when a subprotocol carried it, that subprotocol.
    fn token_in<'a>(&self, head: &'a RequestHead) -> Option<(&'a str, Option<String>)> {
        if let Some(auth) = head.header("authorization")
            && let Some(token) = bearer_token(auth)
        {
            return Some((token, None));
        }
        if let Some(token) = head.query.split('&').find_map(|pair| {
            pair.strip_prefix(TOKEN_PARAMETER)
                .and_then(|rest| rest.strip_prefix('='))
        }) {
            return Some((token, None));
        }
        if let Some(name) = &self.cookie
            && let Some(token) =
                head.headers
                    .iter()
                    .filter(|(n, _)| n == "cookie")
                    .find_map(|(_, v)| {
                        v.split(';')
                            .filter_map(|c| c.trim().split_once('='))
                            .find_map(|(n, v)| (n == name).then_some(v))
                    })
        {
            return Some((token, None));
        }
        let offered = head.header("sec-websocket-protocol")?;
        offered.split(',').map(str::trim).find_map(|p| {
            p.strip_prefix(TOKEN_SUBPROTOCOL)
                .map(|t| (t, Some(p.to_owned())))
        })
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a document claim (an id, a `prefix*` pattern, `"*"`, or a list) names
/// `document`. Document ids never contain `*` (`wire::route`), so a trailing `*` is
/// always a pattern, never part of an id.
fn names_document(claim: Option<&Value>, document: &str) -> bool {
    let matches = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => document.starts_with(prefix),
        None => pattern == document,
    };
    match claim {
        Some(Value::String(p)) => matches(p),
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str().is_some_and(matches)),
        _ => false,
    }
}

/// A short reason for a token that did not verify.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid (nbf)",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "algorithm not accepted",
        ErrorKind::MissingRequiredClaim(_) => "no exp claim",
        _ => "malformed",
    }
}

/// Every plugin's verifier, replaced as a whole when the config is read again.
#[derive(Debug, Default)]
pub struct AccessTokens {
    by_plugin: RwLock<HashMap<String, Arc<TokenVerifier>>>,
}

impl AccessTokens {
    /// The verifiers `config` asks for; fails on the first unusable `[plugin.NAME.auth]`.
    pub fn load(config: &Config) -> Result<AccessTokens, ConfigError> {
        let tokens = AccessTokens::default();
        tokens.replace(config)?;
        Ok(tokens)
    }

    /// Rebuilds every verifier from `config` (keys and secrets read again). On error
    /// the previous verifiers stay.
    pub fn replace(&self, config: &Config) -> Result<(), ConfigError> {
        let mut fresh = HashMap::new();
        for plugin in config.plugin.keys() {
            if let Some(auth) = config.auth_for(plugin)? {
                let verifier = TokenVerifier::new(&auth).map_err(|reason| ConfigError::Auth {
                    plugin: plugin.clone(),
                    reason,
                })?;
                fresh.insert(plugin.clone(), Arc::new(verifier));
            }
        }
        *self.by_plugin.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// `plugin`'s verifier, or `None` when it takes no tokens.
    pub fn for_plugin(&self, plugin: &str) -> Option<Arc<TokenVerifier>> {
        self.by_plugin
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::net::http;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    pub(super) fn verifier(audience: Option<&str>) -> TokenVerifier {
        TokenVerifier::new(&ResolvedAuth {
            algorithm: TokenAlgorithm::Hs256,
            key: SECRET.to_vec(),
            audience: audience.map(str::to_owned),
            leeway_secs: 5,
            document_claim: "doc".into(),
            cookie: Some("session_token".into()),
        })
        .unwrap()
    }

    pub(super) fn token(claims: Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    pub(super) fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    pub(super) fn head(path_and_query: &str, headers: &str) -> RequestHead {
        http::parse_head(
            format!("GET {path_and_query} HTTP/1.1\r\nHost: h\r\n{headers}\r\n").as_bytes(),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn every_source_carries_a_token() {
        let v = verifier(None);
        let t = token(json!({"doc": "a", "exp": now() + 60, "role": "viewer"}));
        let sources = [
            head("/ws/p/a", &format!("Authorization: Bearer {t}\r\n")),
            head(&format!("/ws/p/a?x=1&token={t}"), ""),
            head(
                "/ws/p/a",
                &format!("Cookie: other=1; session_token={t}\r\n"),
            ),
            head(
                "/ws/p/a",
                &format!("Sec-WebSocket-Protocol: chat, {TOKEN_SUBPROTOCOL}{t}\r\n"),
            ),
        ];
        for h in &sources {
            let ok = v.check(h, "a").unwrap();
            let claims: Value = serde_json::from_str(&ok.claims).unwrap();
            assert_eq!(claims["role"], "viewer");
        }
        assert_eq!(
            v.check(&sources[3], "a").unwrap().subprotocol,
            Some(format!("{TOKEN_SUBPROTOCOL}{t}"))
        );
        assert_eq!(
            v.check(&head("/ws/p/a", ""), "a"),
            Err(AccessError::Missing)
        );
    }

    #[test]
    fn each_failed_check_has_its_reason() {
        let v = verifier(Some("app"));
        let check = |claims: Value| v.check(&head(&format!("/?token={}", token(claims)), ""), "a");
        let exp = now() + 60;
        assert!(check(json!({"doc": "a", "exp": exp, "aud": "app"})).is_ok());
        assert_eq!(
            check(json!({"doc": "a", "exp": now() - 60, "aud": "app"})),
            Err(AccessError::Invalid("expired"))
        );
        assert_eq!(
            check(json!({"doc": "a", "exp": exp, "nbf": now() + 60, "aud": "app"})),
            Err(AccessError::Invalid("not yet valid (nbf)"))
        );
        let refused = AccessError::WrongAudience("app".into());
        let wrong_audience = Err(refused.clone());
        assert_eq!(
            check(json!({"doc": "a", "exp": exp, "aud": "other"})),
            wrong_audience
        );
        // Without `aud` at all, or with one that is not a string or strings.
        assert_eq!(check(json!({"doc": "a", "exp": exp})), wrong_audience);
        assert_eq!(
            check(json!({"doc": "a", "exp": exp, "aud": 7})),
            wrong_audience
        );
        // An array holding it will do.
        assert!(check(json!({"doc": "a", "exp": exp, "aud": ["x", "app"]})).is_ok());
        assert_eq!(
            refused.to_string(),
            "invalid access token: wrong audience (aud must be \"app\")"
        );
        assert_eq!(
            check(json!({"doc": "a", "aud": "app"})),
            Err(AccessError::Invalid("no exp claim"))
        );
        assert_eq!(
            check(json!({"doc": "b", "exp": exp, "aud": "app"})),
            Err(AccessError::WrongDocument)
        );
        assert_eq!(
            check(json!({"exp": exp, "aud": "app"})),
            Err(AccessError::WrongDocument)
        );
        // Another secret, `alg: none`, garbage.
        let forged = encode(
            &Header::default(),
            &json!({"doc": "a", "exp": exp, "aud": "app"}),
            &EncodingKey::from_secret(b"x").unwrap(),
        )
        .unwrap();
        assert_eq!(
            v.check(&head(&format!("/?token={forged}"), ""), "a"),
            Err(AccessError::Invalid("bad signature"))
        );
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            forged.split('.').nth(1).unwrap()
        );
        assert_eq!(
            v.check(&head(&format!("/?token={none}"), ""), "a"),
            Err(AccessError::Invalid("malformed"))
        );
        assert_eq!(
            v.check(&head("/?token=garbage", ""), "a"),
            Err(AccessError::Invalid("malformed"))
        );
    }

    #[test]
    fn without_an_audience_check_any_aud_passes() {
        let v = verifier(None);
        let exp = now() + 60;
        for aud in [json!("textdoc"), json!(["a", "b"]), Value::Null] {
            let mut claims = json!({"doc": "a", "exp": exp});
            if !aud.is_null() {
                claims["aud"] = aud;
            }
            let h = head(&format!("/?token={}", token(claims)), "");
            assert!(v.check(&h, "a").is_ok());
        }
    }

    #[test]
    fn document_claims_may_be_patterns_or_lists() {
        assert!(names_document(Some(&json!("*")), "x"));
        assert!(names_document(
            Some(&json!("project-1/*")),
            "project-1/notes"
        ));
        assert!(!names_document(
            Some(&json!("project-1/*")),
            "project-2/notes"
        ));
        assert!(names_document(Some(&json!(["a", "b"])), "b"));
        assert!(!names_document(Some(&json!(["a", 3])), "c"));
        assert!(!names_document(Some(&json!(7)), "7"));
        assert!(!names_document(None, "a"));
    }
}
