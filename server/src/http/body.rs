//! A request's body: its media type, the capped read, and, when it is over
//! the cap, a scan of what arrived to tell whether the script or the input
//! is at fault.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::HeaderMap;

use super::error::ApiError;
use crate::kind::Kind;
use crate::state::Limits;

/// How long a body declared too large is read to tell which field is at
/// fault, at most.
const PEEK_TIME: Duration = Duration::from_millis(200);

/// Accepts `application/json`, with parameters; a charset other than UTF-8
/// is refused because JSON on the wire is UTF-8 (RFC 8259).
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match value {
        Some(value) if is_json(value) => Ok(()),
        Some(value) => Err(ApiError::new(
            Kind::UnsupportedMediaType,
            format!(
                "the body must be sent as Content-Type: application/json (UTF-8), not {:?}",
                value.chars().take(100).collect::<String>()
            ),
        )),
        None => Err(ApiError::new(
            Kind::UnsupportedMediaType,
            "the request has no Content-Type; send the body as application/json",
        )),
    }
}

/// `application/json`, with any parameters but a charset other than UTF-8.
pub fn is_json(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = value.trim().trim_matches('"');
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// Reads the body under `cap`: a declared length over it is refused after a
/// short look at its first bytes (so `over_cap` can tell which field is at
/// fault), a streamed (chunked) body as soon as it passes it. Neither is ever
/// read whole.
pub async fn read_body(
    mut body: Incoming,
    cap: usize,
    over_cap: impl FnOnce(&[u8]) -> ApiError,
) -> Result<Bytes, ApiError> {
    let declared_over = body.size_hint().lower() > cap as u64;
    let mut collected = Vec::with_capacity(body.size_hint().lower().min(cap as u64) as usize);
    let peek_until = tokio::time::Instant::now() + PEEK_TIME;
    loop {
        let frame = if declared_over {
            match tokio::time::timeout_at(peek_until, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => break,
            }
        } else {
            body.frame().await
        };
        let data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Some(Err(error)) if declared_over => {
                tracing::debug!(%error, "an oversized body ended while it was peeked at");
                break;
            }
            Some(Err(error)) => {
                return Err(ApiError::invalid_request(format!(
                    "the request body could not be read: {error}"
                )))
            }
        };
        if collected.len() + data.len() > cap {
            collected.extend_from_slice(&data[..cap - collected.len()]);
            return Err(over_cap(&collected));
        }
        collected.extend_from_slice(&data);
    }
    if declared_over {
        return Err(over_cap(&collected));
    }
    Ok(Bytes::from(collected))
}

/// The answer for an `/execute` body over the cap, from what arrived of it:
/// the input is at fault if it is over its own cap or was still arriving at
/// the cut; otherwise the script is (as it was before requests had an input).
pub fn too_large(prefix: &[u8], limits: &Limits) -> ApiError {
    let input_at_fault = top_level_fields(prefix)
        .iter()
        .any(|field| field.name == "input" && (field.open || field.len > limits.max_input_bytes));
    if input_at_fault {
        ApiError::new(
            Kind::InputTooLarge,
            format!(
                "the request body is over {} bytes: its input is larger than the {}-byte limit",
                limits.max_body_bytes, limits.max_input_bytes
            ),
        )
    } else {
        ApiError::new(
            Kind::ScriptTooLarge,
            format!(
                "the request body is over {} bytes, too large to hold a script of at most {} characters",
                limits.max_body_bytes, limits.max_script_chars
            ),
        )
    }
}

/// A member of a JSON object's prefix, seen without parsing its value.
#[derive(Debug, PartialEq, Eq)]
struct PrefixField {
    name: String,
    /// Bytes of its value that arrived.
    len: usize,
    /// The prefix ends inside the value.
    open: bool,
}

/// The members of the top-level object at the start of `prefix`, which may
/// end anywhere; stops at the first thing that is not JSON.
fn top_level_fields(prefix: &[u8]) -> Vec<PrefixField> {
    let mut fields = Vec::new();
    let skip_ws = |mut i: usize| {
        while i < prefix.len() && prefix[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if prefix.get(i) != Some(&b'{') {
        return fields;
    }
    i += 1;
    loop {
        i = skip_ws(i);
        if prefix.get(i) == Some(&b',') {
            i = skip_ws(i + 1);
        }
        if prefix.get(i) != Some(&b'"') {
            return fields;
        }
        let Some(key_end) = string_end(prefix, i) else {
            return fields;
        };
        let name = serde_json::from_slice::<String>(&prefix[i..key_end]).unwrap_or_default();
        i = skip_ws(key_end);
        if prefix.get(i) != Some(&b':') {
            return fields;
        }
        let start = skip_ws(i + 1);
        let end = value_end(prefix, start);
        let open = end.is_none();
        let end = end.unwrap_or(prefix.len());
        fields.push(PrefixField {
            name,
            len: end - start,
            open,
        });
        if open {
            return fields;
        }
        i = end;
    }
}

/// The index just past the JSON string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the JSON value starting at `start`, or `None` if the
/// bytes end first.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            // A number or a literal ends where the object goes on.
            b',' | b'}' | b']' if depth == 0 => return Some(i),
            c if depth == 0 && c.is_ascii_whitespace() => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::test_limits;
    use hyper::header::HeaderValue;

    #[test]
    fn content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; foo=bar",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_content_type(&headers).unwrap_err().kind,
            Kind::UnsupportedMediaType
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_content_type(&headers).unwrap_err().status(), 415);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(check_content_type(&headers).is_ok());
    }

    #[test]
    fn an_oversized_body_blames_the_field_it_was_cut_in() {
        let fields = top_level_fields(br#" { "script" : "a\"b}", "input": {"x": [1, "]"], "y": 2}, "limits": 7 , "input": [1, 2"#);
        let summary: Vec<_> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.len, f.open))
            .collect();
        assert_eq!(
            summary,
            [
                ("script", 7, false),
                ("input", 23, false),
                ("limits", 1, false),
                ("input", 5, true)
            ]
        );
        let limits = test_limits();
        let kind = |prefix: &str| too_large(prefix.as_bytes(), &limits).kind;
        assert_eq!(
            kind(r#"{"script": "def main(x): ...", "input": [1, 2, 3"#),
            Kind::InputTooLarge
        );
        assert_eq!(
            kind(r#"{"input": "123456789012345678901234", "script": "x"#),
            Kind::InputTooLarge
        );
        assert_eq!(
            kind(r#"{"input": 1, "script": "def main(x): ...     "#),
            Kind::ScriptTooLarge
        );
        assert_eq!(kind(r#"{"script": "#), Kind::ScriptTooLarge);
        assert_eq!(kind(""), Kind::ScriptTooLarge);
        assert_eq!(kind("          "), Kind::ScriptTooLarge);
    }
}
