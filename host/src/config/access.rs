//! `[plugin.NAME.auth]` (access tokens the host checks before a client reaches the
//! consumer) and `[plugin.NAME.settings]` (strings the consumer reads through
//! `wasmroom:consumer/context`). Both may name environment variables as `${NAME}`, so
//! secrets stay out of the file; a variable that is not set is an error at start and at
//! reload, never an empty secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{Config, ConfigError};

/// How `[plugin.NAME.auth]` tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with a secret the backend shares (`secret`).
    #[serde(rename = "HS256")]
    Hs256,
    /// Ed25519 signatures checked with a public key (`public_key_file`, PEM).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSA PKCS#1 v1.5 with SHA-256, checked with a public key (`public_key_file`, PEM).
    #[serde(rename = "RS256")]
    Rs256,
}

/// Shortest HS256 secret accepted: shorter ones can be guessed offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// One plugin's `[plugin.NAME.auth]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The signature algorithm every token must use (others are refused).
    pub algorithm: TokenAlgorithm,
    /// The HS256 secret (at least 32 bytes; `${VAR}` reads the environment).
    pub secret: Option<String>,
    /// The EdDSA or RS256 public key (PEM), relative to the config file. Read at start
    /// and at each reload (SIGHUP), so a key can be rotated without a restart.
    pub public_key_file: Option<PathBuf>,
    /// The `aud` every token must carry (a string, or an array holding it). Unset, it
    /// is the plugin's name, so that a token minted for one plugin opens nothing of
    /// another that shares its secret.
    pub audience: Option<String>,
    /// `false` accepts tokens whatever their `aud` (or without one): how tokens were
    /// checked before the audience defaulted to the plugin's name. Cannot be combined
    /// with `audience`.
    #[serde(default = "default_check_audience")]
    pub check_audience: bool,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The claim naming the document(s) a token opens: a document id, a pattern ending
    /// in `*` (a prefix), `"*"`, or a list of those.
    #[serde(default = "default_document_claim")]
    pub document_claim: String,
    /// A cookie that may carry the token (besides `?token=`, `Authorization: Bearer`
    /// and the `wasmroom.token.` subprotocol).
    pub cookie: Option<String>,
}

fn default_leeway() -> u64 {
    30
}

fn default_check_audience() -> bool {
    true
}

fn default_document_claim() -> String {
    "doc".to_owned()
}

/// One plugin's auth with secrets and keys read: what a verifier is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAuth {
    /// The algorithm.
    pub algorithm: TokenAlgorithm,
    /// The HS256 secret or the PEM bytes of the public key.
    pub key: Vec<u8>,
    /// The `aud` a token must carry; `None` only with `check_audience = false`.
    pub audience: Option<String>,
    /// Allowed clock skew.
    pub leeway_secs: u64,
    /// The document claim's name.
    pub document_claim: String,
    /// The cookie name, if tokens may come in a cookie.
    pub cookie: Option<String>,
}

impl Config {
    /// `plugin`'s settings with environment variables substituted.
    pub fn settings_for(&self, plugin: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(p) = self.plugin.get(plugin) else {
            return Ok(BTreeMap::new());
        };
        p.settings
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    expand_env(v, &format!("plugin.{plugin}.settings.{k}"))?,
                ))
            })
            .collect()
    }

    /// `plugin`'s token rules with the secret or key read, or `None` when the plugin
    /// takes no tokens.
    pub fn auth_for(&self, plugin: &str) -> Result<Option<ResolvedAuth>, ConfigError> {
        let Some(auth) = self.plugin.get(plugin).and_then(|p| p.auth.as_ref()) else {
            return Ok(None);
        };
        let fail = |reason: String| ConfigError::Auth {
            plugin: plugin.to_owned(),
            reason,
        };
        let key = match auth.algorithm {
            TokenAlgorithm::Hs256 => {
                if auth.public_key_file.is_some() {
                    return Err(fail("HS256 takes a secret, not public_key_file".into()));
                }
                let secret = auth.secret.as_deref().ok_or_else(|| {
                    fail("HS256 needs a secret (e.g. secret = \"${TOKEN_SECRET}\")".into())
                })?;
                let secret = expand_env(secret, &format!("plugin.{plugin}.auth.secret"))?;
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(fail(format!(
                        "the HS256 secret must be at least {MIN_SECRET_BYTES} bytes"
                    )));
                }
                secret.into_bytes()
            }
            TokenAlgorithm::EdDsa | TokenAlgorithm::Rs256 => {
                if auth.secret.is_some() {
                    return Err(fail(
                        "EdDSA and RS256 take public_key_file, not a secret".into(),
                    ));
                }
                let file = auth
                    .public_key_file
                    .as_deref()
                    .ok_or_else(|| fail("EdDSA and RS256 need public_key_file (PEM)".into()))?;
                let path = self.relative_to_file(file);
                std::fs::read(&path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?
            }
        };
        if auth.document_claim.is_empty() {
            return Err(fail("document_claim must name a claim".into()));
        }
        let audience = match (&auth.audience, auth.check_audience) {
            (Some(_), false) => {
                return Err(fail(
                    "audience and check_audience = false contradict each other: keep one".into(),
                ));
            }
            (Some(aud), true) if aud.is_empty() => {
                return Err(fail(
                    "audience must not be empty (check_audience = false accepts any)".into(),
                ));
            }
            (Some(aud), true) => Some(aud.clone()),
            (None, true) => Some(plugin.to_owned()),
            (None, false) => None,
        };
        Ok(Some(ResolvedAuth {
            algorithm: auth.algorithm,
            key,
            audience,
            leeway_secs: auth.leeway_secs,
            document_claim: auth.document_claim.clone(),
            cookie: auth.cookie.clone(),
        }))
    }

    /// `path` as written in the config file: relative paths start at the file's folder.
    fn relative_to_file(&self, path: &Path) -> PathBuf {
        match self.source.as_deref().and_then(Path::parent) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        }
    }
}

/// Replaces every `${NAME}` in `value` with the environment variable `NAME`.
pub fn expand_env(value: &str, setting: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ConfigError::Env {
            setting: setting.to_owned(),
            reason: "`${` without a closing `}`".to_owned(),
        })?;
        let name = &after[..end];
        let found = std::env::var(name).map_err(|_| ConfigError::Env {
            setting: setting.to_owned(),
            reason: format!("environment variable {name:?} is not set"),
        })?;
        out.push_str(&found);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn settings_read_the_environment() {
        // SAFETY-free: a variable name no other test uses.
        let c = config("[plugin.chat.settings]\ngreeting = \"hi ${HOME}!\"\nplain = \"x\"");
        let s = c.settings_for("chat").unwrap();
        assert_eq!(
            s["greeting"],
            format!("hi {}!", std::env::var("HOME").unwrap())
        );
        assert_eq!(s["plain"], "x");
        assert!(c.settings_for("other").unwrap().is_empty());
        let missing = config("[plugin.chat.settings]\nkey = \"${WASMROOM_TEST_SURELY_UNSET}\"");
        let e = missing.settings_for("chat").unwrap_err().to_string();
        assert!(
            e.contains("WASMROOM_TEST_SURELY_UNSET") && e.contains("plugin.chat.settings.key"),
            "{e}"
        );
        assert!(expand_env("${OPEN", "s").is_err());
    }

    #[test]
    fn auth_needs_a_long_secret_or_a_key() {
        let short = config("[plugin.doc.auth]\nalgorithm = \"HS256\"\nsecret = \"short\"");
        assert!(
            short
                .auth_for("doc")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        let none = config("[plugin.doc.auth]\nalgorithm = \"EdDSA\"");
        assert!(
            none.auth_for("doc")
                .unwrap_err()
                .to_string()
                .contains("public_key_file")
        );
        let ok = config(&format!(
            "[plugin.doc.auth]\nalgorithm = \"HS256\"\nsecret = \"{}\"\naudience = \"app\"",
            "s".repeat(32)
        ));
        let auth = ok.auth_for("doc").unwrap().unwrap();
        assert_eq!(auth.algorithm, TokenAlgorithm::Hs256);
        assert_eq!(auth.audience.as_deref(), Some("app"));
        assert_eq!(auth.document_claim, "doc");
        assert_eq!(auth.leeway_secs, 30);
        assert!(ok.auth_for("other").unwrap().is_none());
    }

    #[test]
    fn the_audience_is_the_plugins_name_unless_told_otherwise() {
        let secret = "s".repeat(32);
        let auth = |extra: &str| {
            config(&format!(
                "[plugin.textdoc.auth]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n{extra}"
            ))
            .auth_for("textdoc")
        };
        assert_eq!(
            auth("").unwrap().unwrap().audience.as_deref(),
            Some("textdoc")
        );
        assert_eq!(
            auth("audience = \"fidus\"")
                .unwrap()
                .unwrap()
                .audience
                .as_deref(),
            Some("fidus")
        );
        assert_eq!(
            auth("check_audience = false").unwrap().unwrap().audience,
            None
        );
        let both = auth("audience = \"fidus\"\ncheck_audience = false").unwrap_err();
        assert!(both.to_string().contains("contradict"), "{both}");
        let empty = auth("audience = \"\"").unwrap_err();
        assert!(empty.to_string().contains("must not be empty"), "{empty}");
    }
}
