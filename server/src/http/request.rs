//! A request to `POST /execute`: `{script, input, limits}` parsed and checked
//! into an [`ExecuteRequest`] against the server's limits.

use std::collections::BTreeMap;
use std::time::Duration;

use pyexec_worker::JobLimits;
use serde_json::value::RawValue;
use serde_json::Value;

use super::error::ApiError;
use crate::kind::Kind;
use crate::state::Limits;

/// The smallest `limits.memory_mb` a request may ask for: below it Python
/// itself can hardly start a job.
pub const MIN_MEMORY_MB: u64 = 16;
/// The shortest `limits.timeout_s` a request may ask for.
pub const MIN_TIMEOUT_S: f64 = 0.001;

/// A script from a request, with its length in characters (counted once: the
/// limit and the job log line both need it).
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    pub chars: usize,
}

/// A checked request: the script, `main`'s input as sent, and the limits
/// the job runs under.
#[derive(Debug)]
pub struct ExecuteRequest<'a> {
    pub script: Script,
    pub input: Option<&'a RawValue>,
    pub limits: JobLimits,
}

/// The body's fields; any other is refused: silently ignoring a field a
/// client believes does something would hide its bug.
const FIELDS: [&str; 3] = ["script", "input", "limits"];

/// `{"script": "...", "input": <any JSON>, "limits": {...}}`, the last two
/// optional. The input stays raw JSON: it is passed to the runner as sent,
/// and the server never builds a tree of it.
pub fn parse_request<'a>(
    body: &'a [u8],
    limits: &Limits,
    ceilings: &Ceilings,
) -> Result<ExecuteRequest<'a>, ApiError> {
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_slice(body) {
        Ok(fields) => fields,
        Err(_) => return Err(not_an_object(body)),
    };
    if let Some(extra) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = extra.chars().take(50).collect();
        return Err(ApiError::invalid_request(format!(
            "unknown field {shown:?}: the body's fields are \"script\", \"input\" and \"limits\""
        )));
    }
    let script = match fields.get("script") {
        Some(raw) => parse_script(raw, limits)?,
        None => {
            return Err(ApiError::invalid_request(
                "the body has no \"script\" field",
            ))
        }
    };
    let input = fields.get("input").copied();
    if let Some(input) = input {
        let bytes = input.get().len();
        if bytes > limits.max_input_bytes {
            return Err(ApiError::new(
                Kind::InputTooLarge,
                format!(
                    "the input is {bytes} bytes of JSON; the limit is {}",
                    limits.max_input_bytes
                ),
            ));
        }
    }
    let limits = match fields.get("limits") {
        Some(raw) => parse_limits(raw, ceilings)?,
        None => JobLimits {
            timeout: ceilings.timeout,
            memory_bytes: ceilings.memory_mb << 20,
        },
    };
    Ok(ExecuteRequest {
        script,
        input,
        limits,
    })
}

/// Why a body that is not a JSON object was refused (the slow path: only
/// refused bodies are parsed twice).
fn not_an_object(body: &[u8]) -> ApiError {
    match serde_json::from_slice::<Value>(body) {
        Err(e) => ApiError::invalid_request(format!("the body is not valid JSON: {e}")),
        Ok(value) => ApiError::invalid_request(format!(
            "the body must be a JSON object like {{\"script\": \"...\"}}, not {}",
            type_name(&value)
        )),
    }
}

fn parse_script(raw: &RawValue, limits: &Limits) -> Result<Script, ApiError> {
    let script: String = serde_json::from_str(raw.get()).map_err(|e| {
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => ApiError::invalid_request(format!(
                "\"script\" must be a string of Python source, not {}",
                type_name(&value)
            )),
            // A string JSON can't turn into text: a lone surrogate escape.
            Err(_) => ApiError::invalid_request(format!("\"script\" is not valid text: {e}")),
        }
    })?;
    if script.trim().is_empty() {
        return Err(ApiError::invalid_request(
            "\"script\" is empty; send Python source that defines main()",
        ));
    }
    let chars = script.chars().count();
    if chars > limits.max_script_chars {
        return Err(ApiError::new(
            Kind::ScriptTooLarge,
            format!(
                "the script has {chars} characters; the limit is {}",
                limits.max_script_chars
            ),
        ));
    }
    Ok(Script {
        text: script,
        chars,
    })
}

/// `{"timeout_s": 2.5, "memory_mb": 128}`, each optional, each at most the
/// server's own limit: a request may tighten its limits, never loosen them.
/// The most a request's own `limits` may ask for, and its job's limits when
/// it asks for none: the server's, or lower ones of the caller's API key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    pub timeout: Duration,
    pub memory_mb: u64,
    /// The caller's key sets them, not the server: the messages say so.
    pub of_key: bool,
}

impl Ceilings {
    /// The server's own.
    pub fn of_server(limits: &Limits) -> Ceilings {
        Ceilings {
            timeout: limits.timeout,
            memory_mb: limits.memory_mb,
            of_key: false,
        }
    }

    fn source(&self, server_var: &str, key_field: &str) -> String {
        if self.of_key {
            format!("this API key's {key_field}")
        } else {
            format!("the server's {server_var}")
        }
    }
}

fn parse_limits(raw: &RawValue, server: &Ceilings) -> Result<JobLimits, ApiError> {
    let value: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid_request(format!(
            "\"limits\" must be an object like {{\"timeout_s\": 2.5, \"memory_mb\": 128}}, not {}",
            type_name(&value)
        )));
    };
    let mut limits = JobLimits {
        timeout: server.timeout,
        memory_bytes: server.memory_mb << 20,
    };
    for (name, value) in &fields {
        match name.as_str() {
            "timeout_s" => {
                let cap = server.timeout.as_secs_f64();
                match value.as_f64() {
                    Some(s) if (MIN_TIMEOUT_S..=cap).contains(&s) => {
                        limits.timeout = Duration::from_secs_f64(s)
                    }
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "limits.timeout_s must be a number of seconds from {MIN_TIMEOUT_S} to {cap} ({}), not {}",
                            server.source("PYEXEC_TIMEOUT", "max_timeout_s"),
                            shown(value)
                        )))
                    }
                }
            }
            "memory_mb" => {
                let cap = server.memory_mb;
                let whole = value.as_u64().or_else(|| {
                    value
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                        .map(|f| f as u64)
                });
                match whole {
                    Some(mb) if (MIN_MEMORY_MB..=cap).contains(&mb) => {
                        limits.memory_bytes = mb << 20
                    }
                    _ => {
                        return Err(ApiError::invalid_request(format!(
                            "limits.memory_mb must be a whole number of MiB from {MIN_MEMORY_MB} to {cap} ({}), not {}",
                            server.source("PYEXEC_MEMORY_MB", "max_memory_mb"),
                            shown(value)
                        )))
                    }
                }
            }
            other => {
                let shown: String = other.chars().take(50).collect();
                return Err(ApiError::invalid_request(format!(
                    "unknown field {shown:?} in \"limits\": its fields are \"timeout_s\" and \"memory_mb\""
                )));
            }
        }
    }
    Ok(limits)
}

/// A client's value in a message: numbers as they are, other types by name.
fn shown(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The server's limits the unit tests check requests against.
#[cfg(test)]
pub(super) fn test_limits() -> Limits {
    Limits {
        max_script_chars: 10,
        max_input_bytes: 20,
        max_body_bytes: 1000,
        body_timeout: Duration::from_secs(10),
        max_result_bytes: 1000,
        timeout: Duration::from_secs(10),
        memory_mb: 256,
        file_caps: pyexec_worker::FileCaps {
            max_files: 32,
            max_bytes: 1 << 20,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ExecuteRequest<'_>, ApiError> {
        parse_request(
            body.as_bytes(),
            &test_limits(),
            &Ceilings::of_server(&test_limits()),
        )
    }

    #[test]
    fn scripts() {
        let request = parse(r#"{"script": "x = 1"}"#).unwrap();
        assert_eq!(request.script.text, "x = 1");
        assert!(request.input.is_none());
        assert_eq!(
            request.limits,
            JobLimits {
                timeout: Duration::from_secs(10),
                memory_bytes: 256 << 20
            }
        );
        // Ten characters but more bytes: the limit counts characters.
        assert_eq!(
            parse(r#"{"script": "ééééééé€€€"}"#).unwrap().script.chars,
            10
        );
        for (body, kind, says) in [
            ("not json", Kind::InvalidRequest, "not valid JSON"),
            ("[1]", Kind::InvalidRequest, "an array"),
            ("{}", Kind::InvalidRequest, "no \"script\""),
            (r#"{"script": 5}"#, Kind::InvalidRequest, "a number"),
            (r#"{"script": null}"#, Kind::InvalidRequest, "null"),
            (
                r#"{"script": "\ud800"}"#,
                Kind::InvalidRequest,
                "is not valid text",
            ),
            (r#"{"script": ""}"#, Kind::InvalidRequest, "empty"),
            (r#"{"script": " \n\t"}"#, Kind::InvalidRequest, "empty"),
            (
                r#"{"script": "x=1", "timeout": 3}"#,
                Kind::InvalidRequest,
                "\"timeout\"",
            ),
            (
                r#"{"script": "12345678901"}"#,
                Kind::ScriptTooLarge,
                "11 characters",
            ),
        ] {
            let error = parse(body).unwrap_err();
            assert_eq!(error.kind, kind, "{body}");
            assert!(error.message.contains(says), "{body}: {}", error.message);
        }
    }

    #[test]
    fn inputs_stay_as_sent_and_have_their_own_cap() {
        let request = parse(r#"{"script": "x", "input": {"a" : [1, 2.50]}}"#).unwrap();
        assert_eq!(request.input.unwrap().get(), r#"{"a" : [1, 2.50]}"#);
        // null is an input like any other: main(None).
        let request = parse(r#"{"input": null, "script": "x"}"#).unwrap();
        assert_eq!(request.input.unwrap().get(), "null");
        // The cap counts the input's bytes as sent: 20 pass, 21 don't.
        assert!(parse(r#"{"script": "x", "input": "123456789012345678"}"#).is_ok());
        let error = parse(r#"{"script": "x", "input": "1234567890123456789"}"#).unwrap_err();
        assert_eq!(error.kind, Kind::InputTooLarge);
        assert_eq!(error.status(), 413);
        assert!(error.message.contains("21 bytes"), "{}", error.message);
        assert!(parse(r#"{"script": "x", "input": [1,}"#).is_err());
    }

    #[test]
    fn limits_may_tighten_never_loosen() {
        let request =
            parse(r#"{"script": "x", "limits": {"timeout_s": 2.5, "memory_mb": 64}}"#).unwrap();
        assert_eq!(
            request.limits,
            JobLimits {
                timeout: Duration::from_millis(2500),
                memory_bytes: 64 << 20
            }
        );
        let request = parse(r#"{"script": "x", "limits": {"memory_mb": 16.0}}"#).unwrap();
        assert_eq!(request.limits.memory_bytes, 16 << 20);
        assert_eq!(request.limits.timeout, Duration::from_secs(10));
        let request = parse(r#"{"script": "x", "limits": {}}"#).unwrap();
        assert_eq!(request.limits.memory_bytes, 256 << 20);
        for (limits, says) in [
            (
                r#"{"timeout_s": 10.5}"#,
                "from 0.001 to 10 (the server's PYEXEC_TIMEOUT), not 10.5",
            ),
            (r#"{"timeout_s": 0}"#, "not 0"),
            (r#"{"timeout_s": -1}"#, "not -1"),
            (r#"{"timeout_s": "2"}"#, "not a string"),
            (r#"{"timeout_s": null}"#, "not null"),
            (
                r#"{"memory_mb": 257}"#,
                "from 16 to 256 (the server's PYEXEC_MEMORY_MB), not 257",
            ),
            (r#"{"memory_mb": 15}"#, "not 15"),
            (r#"{"memory_mb": 64.5}"#, "not 64.5"),
            (r#"{"memory_mb": true}"#, "not a boolean"),
            (r#"{"cpus": 1}"#, "unknown field \"cpus\" in \"limits\""),
            (r#"null"#, "\"limits\" must be an object"),
            (r#"[1]"#, "not an array"),
        ] {
            let body = format!(r#"{{"script": "x", "limits": {limits}}}"#);
            let error = parse(&body).unwrap_err();
            assert_eq!(error.kind, Kind::InvalidRequest, "{limits}");
            assert!(error.message.contains(says), "{limits}: {}", error.message);
        }
    }
}
