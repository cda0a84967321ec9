//! API key tokens: the public key id, the secret shown once, and the hash
//! stored in the secret's place.
//!
//! A token reads `pyx_<id>_<secret>`: `id` is 12 characters of `[a-z0-9]`
//! (about 62 random bits, public: logs, metrics and errors name it), `secret`
//! is 256 random bits in base64url without padding (43 characters). The store
//! keeps only `SHA-256(secret)`; a plain hash suffices because the secret is
//! uniformly random, not a password.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::random;

const PREFIX: &str = "pyx_";
const ID_LEN: usize = 12;
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_BYTES: usize = 32;
const SECRET_TEXT_LEN: usize = 43;
/// The length of every token, in bytes.
pub const TOKEN_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_TEXT_LEN;

/// The public half of a key: 12 characters of `[a-z0-9]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// `text` if it is a well-formed key id.
    pub fn parse(text: &str) -> Option<KeyId> {
        let well_formed = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        well_formed.then(|| KeyId(text.to_owned()))
    }

    /// The id's 12 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn random() -> KeyId {
        // Rejection sampling keeps every character equally likely:
        // 252 = 7 × 36 is the largest multiple of 36 below 256.
        let mut id = String::with_capacity(ID_LEN);
        while id.len() < ID_LEN {
            for b in random::bytes::<16>() {
                if b < 252 && id.len() < ID_LEN {
                    id.push(ID_ALPHABET[usize::from(b % 36)] as char);
                }
            }
        }
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// The private half of a key, as a caller presented it. Never printed.
pub struct Secret([u8; SECRET_BYTES]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A whole token, `pyx_<id>_<secret>`: what a caller sends as
/// `Authorization: Bearer <token>`. `Display` writes all of it (to show it
/// once, at creation); `Debug` writes only the key id.
pub struct Token {
    text: String,
}

impl Token {
    /// The key id the token carries.
    pub fn key_id(&self) -> KeyId {
        KeyId(self.text[PREFIX.len()..PREFIX.len() + ID_LEN].to_owned())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({PREFIX}{}_<redacted>)", self.key_id())
    }
}

/// SHA-256 of a secret: what the store keeps instead of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// The hash of `secret`.
    pub fn of(secret: &Secret) -> SecretHash {
        SecretHash(Sha256::digest(secret.0).into())
    }

    /// Whether `secret` hashes to this, compared in constant time.
    pub fn matches(&self, secret: &Secret) -> bool {
        SecretHash::of(secret).0.ct_eq(&self.0).into()
    }

    /// The 32 bytes, for the database.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash read back from the database, if it has the right length.
    pub fn from_bytes(bytes: &[u8]) -> Option<SecretHash> {
        bytes.try_into().ok().map(SecretHash)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A fresh key: its id, the token to show once, and the hash to store.
pub fn new_token() -> (KeyId, Token, SecretHash) {
    let id = KeyId::random();
    let secret = Secret(random::bytes::<SECRET_BYTES>());
    let mut text = String::with_capacity(TOKEN_LEN);
    text.push_str(PREFIX);
    text.push_str(id.as_str());
    text.push('_');
    URL_SAFE_NO_PAD.encode_string(secret.0, &mut text);
    let hash = SecretHash::of(&secret);
    (id, Token { text }, hash)
}

/// The key id and secret of a well-formed token; `None` for anything else
/// (any length but [`TOKEN_LEN`] is refused before looking further). The
/// secret must be canonical base64url: one secret has one spelling.
pub fn parse_token(text: &str) -> Option<(KeyId, Secret)> {
    if text.len() != TOKEN_LEN || !text.is_ascii() {
        return None;
    }
    let rest = text.strip_prefix(PREFIX)?;
    let (id, rest) = rest.split_at(ID_LEN);
    let id = KeyId::parse(id)?;
    let secret_text = rest.strip_prefix('_')?;
    let mut secret = [0u8; SECRET_BYTES];
    match URL_SAFE_NO_PAD.decode_slice(secret_text, &mut secret) {
        Ok(SECRET_BYTES) => Some((id, Secret(secret))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_parses_back_to_its_id_and_a_secret_that_matches_its_hash() {
        let (id, token, hash) = new_token();
        let text = token.to_string();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with(&format!("pyx_{id}_")), "{text}");
        let (parsed_id, secret) = parse_token(&text).expect("parses");
        assert_eq!(parsed_id, id);
        assert_eq!(token.key_id(), id);
        assert!(hash.matches(&secret));
    }

    #[test]
    fn another_secret_does_not_match() {
        let (_, token, _) = new_token();
        let (_, _, other_hash) = new_token();
        let (_, secret) = parse_token(&token.to_string()).unwrap();
        assert!(!other_hash.matches(&secret));
    }

    #[test]
    fn tokens_and_ids_differ_each_time() {
        let (a, ta, _) = new_token();
        let (b, tb, _) = new_token();
        assert_ne!(a, b);
        assert_ne!(ta.to_string(), tb.to_string());
    }

    #[test]
    fn key_ids_use_the_whole_alphabet_and_nothing_else() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let id = KeyId::random();
            assert!(KeyId::parse(id.as_str()).is_some(), "{id}");
            seen.extend(id.as_str().bytes());
        }
        assert_eq!(seen.len(), 36, "{seen:?}");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (_, token, _) = new_token();
        let good = token.to_string();
        let mut cases = vec![
            String::new(),
            "pyx_".to_string(),
            good[..TOKEN_LEN - 1].to_string(),
            format!("{good}A"),
            good.replacen("pyx_", "pyz_", 1),
            good.to_uppercase(),
            format!("{}{}", &good[..16], &good[16..].replacen('_', "-", 1)),
            "x".repeat(100_000),
        ];
        // A separator that isn't '_' between the id and the secret.
        let mut bytes = good.clone().into_bytes();
        bytes[16] = b'-';
        cases.push(String::from_utf8(bytes).unwrap());
        // A non-canonical last character (its unused low bits set).
        let mut bytes = good.clone().into_bytes();
        let last = TOKEN_LEN - 1;
        bytes[last] = if bytes[last] == b'B' { b'C' } else { b'B' };
        cases.push(String::from_utf8(bytes).unwrap());
        // A multi-byte character keeping the byte length.
        cases.push(format!("{}é", &good[..TOKEN_LEN - 2]));
        for case in cases {
            assert!(parse_token(&case).is_none(), "accepted {case:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let (id, token, hash) = new_token();
        let text = token.to_string();
        let secret_text = &text[17..];
        let (_, secret) = parse_token(&text).unwrap();
        for shown in [
            format!("{token:?}"),
            format!("{secret:?}"),
            format!("{hash:?}"),
            format!("{:?}", (id.clone(), &token, hash)),
        ] {
            assert!(!shown.contains(secret_text), "{shown}");
        }
        assert!(format!("{token:?}").contains(id.as_str()));
    }

    #[test]
    fn key_id_parse_is_strict() {
        assert!(KeyId::parse("abcdefghij12").is_some());
        for bad in [
            "",
            "abcdefghij1",
            "abcdefghij123",
            "ABCDEFGHIJ12",
            "abcdefghij-1",
            "abcdéfghij1",
        ] {
            assert!(KeyId::parse(bad).is_none(), "{bad}");
        }
    }
}
