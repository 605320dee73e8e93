//! Access tokens for the tests: signing them as an application's backend would (HS256
//! with a shared secret, EdDSA and RS256 with the keys in `tests/fixtures`), a server whose
//! plugins take them, and talking to the `probe` consumer about what it saw.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::{PATIENCE, Server, Ws, recv_text, send_text};

/// The HS256 secret of the `probe` and `textdoc` plugins in [`start`].
pub const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// A file in `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// A token signed with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A token signed with the Ed25519 test key.
pub fn eddsa(claims: &Value) -> String {
    let pem = std::fs::read(fixture("ed25519-test-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// A token signed with the RSA test key.
pub fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rsa-test-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// An `exp` a minute from now.
pub fn in_a_minute() -> u64 {
    get_current_timestamp() + 60
}

/// A server whose `probe` takes HS256 tokens (from a cookie too), `textdoc` takes them
/// as well, `chat` takes EdDSA tokens and `relay` RS256 ones; the probe has settings, one
/// from the environment.
pub fn start() -> anyhow::Result<Server> {
    let public = fixture("ed25519-test-public.pem");
    let rsa = fixture("rsa-test-public.pem");
    let config = format!(
        r#"
[plugin.probe.auth]
algorithm = "HS256"
secret = "${{WASMROOM_TEST_TOKEN_SECRET}}"
audience = "wasmroom-tests"
cookie = "session_token"

[plugin.probe.settings]
greeting = "hello"
from_env = "${{WASMROOM_TEST_SETTING}}"

[plugin.textdoc.auth]
algorithm = "HS256"
secret = "{SECRET}"

[plugin.chat.auth]
algorithm = "EdDSA"
public_key_file = "{}"

[plugin.relay.auth]
algorithm = "RS256"
public_key_file = "{}"
"#,
        public.display(),
        rsa.display()
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(file.path(), config)?;
    let (_, path) = file.keep()?;
    Server::start_with_env(
        &["probe", "textdoc", "chat", "relay"],
        1,
        &["--config", path.to_str().expect("temp paths are UTF-8")],
        &[
            ("WASMROOM_TEST_TOKEN_SECRET", SECRET),
            ("WASMROOM_TEST_SETTING", "from the environment"),
        ],
    )
}

/// Opens a WebSocket with extra request headers.
pub async fn connect_with(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Ws> {
    let mut request = server.url(0, path).into_client_request()?;
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?;
        request.headers_mut().insert(name, value.parse()?);
    }
    let (ws, _) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await??;
    Ok(ws)
}

/// The claims the probe consumer sees for this connection.
pub async fn claims_seen(ws: &mut Ws) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&ask(ws, "claims").await?)?)
}

/// Sends a command to the probe and returns its answer.
pub async fn ask(ws: &mut Ws, command: &str) -> anyhow::Result<String> {
    send_text(ws, command).await?;
    recv_text(ws).await
}
