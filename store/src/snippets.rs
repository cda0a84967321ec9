//! Saved snippets: a script with its input and limits, under an id that is
//! hard to guess, owned by the key that saved it (or by no key).
//!
//! Sizes are the server's business; the store keeps what it is given,
//! except NUL characters, which Postgres text can't hold (refused by both
//! backends alike).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::StoreError;
use crate::random;
use crate::token::KeyId;

const ID_BYTES: usize = 16;
const ID_TEXT_LEN: usize = 22;

/// A snippet id: 128 random bits in base64url without padding (22 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnippetId(String);

impl SnippetId {
    /// `text` if it is a well-formed (canonical) snippet id.
    pub fn parse(text: &str) -> Option<SnippetId> {
        if text.len() != ID_TEXT_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(ID_BYTES) => Some(SnippetId(text.to_owned())),
            _ => None,
        }
    }

    /// The id's 22 characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn random() -> SnippetId {
        SnippetId(URL_SAFE_NO_PAD.encode(random::bytes::<ID_BYTES>()))
    }
}

impl fmt::Display for SnippetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnippetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnippetId({})", self.0)
    }
}

/// A snippet to save.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSnippet {
    /// The key saving it; `None` when the server runs without keys.
    pub key_id: Option<KeyId>,
    pub script: String,
    /// Raw JSON text, as the caller sent it.
    pub input: Option<String>,
    /// Raw JSON text, as the caller sent it.
    pub limits: Option<String>,
}

/// A saved snippet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snippet {
    pub id: SnippetId,
    pub key_id: Option<KeyId>,
    pub script: String,
    pub input: Option<String>,
    pub limits: Option<String>,
    /// Unix seconds, by the database's clock.
    pub created_at: i64,
}

/// What [`Store::delete_snippet`](crate::Store::delete_snippet) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnippetDeletion {
    Deleted,
    NotFound,
    /// It exists, but belongs to another key (or to no key): left in place.
    NotOwner,
}

pub(crate) fn validate(snippet: &NewSnippet) -> Result<(), StoreError> {
    let texts = [
        ("script", Some(&snippet.script)),
        ("input", snippet.input.as_ref()),
        ("limits", snippet.limits.as_ref()),
    ];
    for (name, text) in texts {
        if text.is_some_and(|t| t.contains('\0')) {
            return Err(StoreError::Invalid(format!(
                "a snippet's {name} can't hold a NUL character"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back_and_differ() {
        let a = SnippetId::random();
        let b = SnippetId::random();
        assert_ne!(a, b);
        assert_eq!(SnippetId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn malformed_ids_are_refused() {
        let good = SnippetId::random().to_string();
        let mut non_canonical = good.clone().into_bytes();
        non_canonical[ID_TEXT_LEN - 1] = b'B';
        for bad in [
            String::new(),
            good[..ID_TEXT_LEN - 1].to_string(),
            format!("{good}A"),
            format!("{}=", &good[..ID_TEXT_LEN - 1]),
            format!("{}/", &good[..ID_TEXT_LEN - 1]),
            String::from_utf8(non_canonical).unwrap(),
        ] {
            assert!(SnippetId::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn nul_characters_are_refused() {
        let snippet = NewSnippet {
            key_id: None,
            script: "print(1)".into(),
            input: Some("{\"a\":\"\0\"}".into()),
            limits: None,
        };
        assert!(validate(&snippet).is_err());
        assert!(validate(&NewSnippet {
            input: None,
            ..snippet
        })
        .is_ok());
    }
}
