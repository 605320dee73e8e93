//! The client's `Sec-WebSocket-Key` (RFC 6455, section 4.2.1): a nonce of 16 bytes in
//! base64, so 24 characters ending in `==`. The server only hashes it into its answer;
//! a key that is not one comes from a client that does not follow the protocol, which
//! gets 400 saying what is wrong before anything is opened for it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The key's length once decoded.
pub const KEY_BYTES: usize = 16;

/// Why a `Sec-WebSocket-Key` is refused (HTTP 400, with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No `Sec-WebSocket-Key` header.
    #[error("missing Sec-WebSocket-Key")]
    Missing,
    /// Not base64 (standard alphabet, padded, unused bits zero).
    #[error("Sec-WebSocket-Key is not base64 (standard alphabet, with its '=' padding)")]
    NotBase64,
    /// Base64 of a number of bytes other than 16.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64, not {0}")]
    WrongLength(usize),
}

/// Checks the value of a client's `Sec-WebSocket-Key` header (`None`: there is none);
/// returns the key without the spaces or tabs around it, which is what the answer's
/// `Sec-WebSocket-Accept` is computed from.
pub fn check_key(value: Option<&str>) -> Result<&str, KeyError> {
    let key = value.ok_or(KeyError::Missing)?.trim_matches([' ', '\t']);
    match STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == KEY_BYTES => Ok(key),
        Ok(bytes) => Err(KeyError::WrongLength(bytes.len())),
        Err(_) => Err(KeyError::NotBase64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_16_bytes_pass() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            check_key(Some("dGhlIHNhbXBsZSBub25jZQ==")),
            Ok("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(
            check_key(Some(" \tAAAAAAAAAAAAAAAAAAAAAA== ")),
            Ok("AAAAAAAAAAAAAAAAAAAAAA==")
        );
        assert_eq!(
            check_key(Some("/+/+/+/+/+/+/+/+/+/+/w==")).map(str::len),
            Ok(24)
        );
    }

    #[test]
    fn other_keys_say_what_is_wrong() {
        assert_eq!(check_key(None), Err(KeyError::Missing));
        assert_eq!(check_key(Some("")), Err(KeyError::WrongLength(0)));
        // 15 and 17 bytes.
        assert_eq!(
            check_key(Some(&STANDARD.encode([7u8; 15]))),
            Err(KeyError::WrongLength(15))
        );
        assert_eq!(
            check_key(Some(&STANDARD.encode([7u8; 17]))),
            Err(KeyError::WrongLength(17))
        );
        // 16 bytes, but: without its padding, in the URL-safe alphabet, with a character
        // base64 does not have, with unused bits set, with a space inside.
        for bad in [
            "dGhlIHNhbXBsZSBub25jZQ",
            "_-_-_-_-_-_-_-_-_-_-_w==",
            "dGhlIHNhbXBsZSBub25jZ!==",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBu b25jZQ==",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZQ===",
        ] {
            assert_eq!(check_key(Some(bad)), Err(KeyError::NotBase64), "{bad:?}");
        }
        assert_eq!(
            KeyError::WrongLength(17).to_string(),
            "Sec-WebSocket-Key must be 16 bytes in base64, not 17"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_16_bytes_encoded_pass(bytes in any::<[u8; 16]>()) {
                let key = STANDARD.encode(bytes);
                prop_assert_eq!(check_key(Some(&key)), Ok(key.as_str()));
            }

            /// A key with one character changed passes only if it is still the padded,
            /// canonical base64 of 16 bytes.
            #[test]
            fn what_passes_is_canonical_base64_of_16_bytes(
                bytes in any::<[u8; 16]>(),
                at in 0usize..24,
                with in proptest::sample::select(b"AQgw+/=_- !".to_vec()),
            ) {
                let mut key = STANDARD.encode(bytes).into_bytes();
                key[at] = with;
                let key = String::from_utf8(key).unwrap();
                if let Ok(passed) = check_key(Some(&key)) {
                    prop_assert_eq!(passed.len(), 24);
                    prop_assert!(passed.ends_with("=="));
                    let decoded = STANDARD.decode(passed).unwrap();
                    prop_assert_eq!(decoded.len(), KEY_BYTES);
                    prop_assert_eq!(STANDARD.encode(decoded), passed);
                } else {
                    // Refused: the character is not base64, or the place is the one that
                    // holds the last 2 bits (its other 4 must be 0) or the padding.
                    let changed = key.as_bytes()[at];
                    let base64 = changed.is_ascii_alphanumeric() || b"+/".contains(&changed);
                    prop_assert!(at >= 21 || !base64, "{key:?} refused");
                }
            }
        }
    }
}
