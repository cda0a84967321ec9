//! The messages between the server and the runner inside the jail.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of
//! UTF-8 JSON (see [`super::codec`]). One exchange per worker:
//!
//! ```text
//! runner → server   {"type":"ready", versions…}          after numpy/pandas imported
//! server → runner   {"type":"job","script":…,"input":…}  exactly once
//! runner → server   {"type":"result","result":{…},"files":[…]}   or {"type":"error",…}
//! ```
//!
//! `python/protocol_examples.json` holds example frames that both this module's
//! tests and the runner's tests decode, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What the server sends: the one job a worker will ever run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToRunner {
    Job {
        script: String,
        /// `main`'s argument as the client sent it; absent: `main()` takes
        /// none. A JSON `null` is an input like any other (`main(None)`).
        #[serde(skip_serializing_if = "Option::is_none")]
        input: Option<Box<RawValue>>,
        /// The runner refuses results whose JSON is larger than this.
        max_result_bytes: u64,
        /// At most this many files of /tmp/outputs come back …
        max_files: u32,
        /// … holding at most this many bytes in all.
        max_files_bytes: u64,
    },
}

impl ToRunner {
    /// The frame that sends `job`.
    pub fn of(job: &crate::job::Job) -> ToRunner {
        ToRunner::Job {
            script: job.script.clone(),
            input: job.input.clone(),
            max_result_bytes: job.max_result_bytes,
            max_files: job.file_caps.max_files,
            max_files_bytes: job.file_caps.max_bytes,
        }
    }
}

// Read back (by the tests, and by anything that replays frames) through a
// flat envelope: an internally tagged enum buffers its content, which
// `RawValue` cannot come through.
#[derive(Deserialize)]
struct JobEnvelope {
    #[serde(rename = "type")]
    message_type: String,
    script: String,
    #[serde(default, deserialize_with = "present")]
    input: Option<Box<RawValue>>,
    max_result_bytes: u64,
    max_files: u32,
    max_files_bytes: u64,
}

impl<'de> Deserialize<'de> for ToRunner {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let e = JobEnvelope::deserialize(deserializer)?;
        if e.message_type != "job" {
            return Err(serde::de::Error::custom(format!(
                "unknown message type {:?}",
                e.message_type
            )));
        }
        Ok(ToRunner::Job {
            script: e.script,
            input: e.input,
            max_result_bytes: e.max_result_bytes,
            max_files: e.max_files,
            max_files_bytes: e.max_files_bytes,
        })
    }
}

/// A field that is there, `null` included (serde would read `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One file the script left in /tmp/outputs, as the runner read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputFile {
    /// Relative to /tmp/outputs, `/` between folders.
    pub name: String,
    pub size: u64,
    /// From the name's extension (Python's `mimetypes`).
    pub media_type: String,
    /// From the file's leading bytes (`content_type` in
    /// python/pyexec_runner/outputs.py): `image/png`, `image/jpeg`,
    /// `application/pdf`, `image/svg+xml`, `application/json`, `text/csv`,
    /// `text/plain` or `application/octet-stream`.
    pub content_type: String,
    pub content_base64: String,
}

/// The files of a successful job: those that fit the caps, and the names of
/// those left out (at most [`MAX_OMITTED_LISTED`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputFiles {
    pub files: Vec<OutputFile>,
    pub truncated: bool,
    pub omitted: Vec<String>,
}

/// The runner lists at most this many omitted names (`MAX_OMITTED_LISTED` in
/// python/pyexec_runner/outputs.py); a test checks the two agree.
pub const MAX_OMITTED_LISTED: usize = 100;
/// The runner skips files whose relative name is longer than this, in bytes
/// of UTF-8 (`MAX_FILE_NAME_BYTES`).
pub const MAX_FILE_NAME_BYTES: usize = 1024;

/// What the runner sends back.
#[derive(Debug)]
pub enum FromRunner {
    /// The interpreter is warm (numpy and pandas imported) and waits for its job.
    Ready(Versions),
    /// `main()` returned a JSON object. Kept as raw JSON: the server passes it
    /// through to the client without building a tree of it.
    Result {
        result: Box<RawValue>,
        files: OutputFiles,
    },
    /// The script failed in a way the runner could observe and explain.
    Error(ScriptError),
}

// serde's internally tagged enums buffer their content, which `RawValue`
// cannot come through; so frames are read into one flat envelope first.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    message_type: String,
    result: Option<Box<RawValue>>,
    files: Option<Vec<OutputFile>>,
    files_truncated: Option<bool>,
    files_omitted: Option<Vec<String>>,
    python: Option<String>,
    numpy: Option<String>,
    pandas: Option<String>,
    kind: Option<ScriptErrorKind>,
    message: Option<String>,
    line: Option<u32>,
    traceback: Option<String>,
}

impl<'de> Deserialize<'de> for FromRunner {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let e = Envelope::deserialize(deserializer)?;
        match e.message_type.as_str() {
            "ready" => Ok(FromRunner::Ready(Versions {
                python: e.python.unwrap_or_default(),
                numpy: e.numpy.unwrap_or_default(),
                pandas: e.pandas.unwrap_or_default(),
            })),
            "result" => match e.result {
                Some(result) if result.get().starts_with('{') => Ok(FromRunner::Result {
                    result,
                    files: OutputFiles {
                        files: e.files.unwrap_or_default(),
                        truncated: e.files_truncated.unwrap_or(false),
                        omitted: e.files_omitted.unwrap_or_default(),
                    },
                }),
                _ => Err(D::Error::custom("a result frame must carry a JSON object")),
            },
            "error" => Ok(FromRunner::Error(ScriptError {
                kind: e.kind.ok_or_else(|| D::Error::missing_field("kind"))?,
                message: e
                    .message
                    .ok_or_else(|| D::Error::missing_field("message"))?,
                line: e.line,
                traceback: e.traceback,
            })),
            other => Err(D::Error::custom(format!("unknown message type {other:?}"))),
        }
    }
}

/// Versions the runner reports once it is warm, for logs and build info.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Versions {
    pub python: String,
    pub numpy: String,
    pub pandas: String,
}

/// A failure the runner diagnosed itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScriptError {
    pub kind: ScriptErrorKind,
    pub message: String,
    /// The line of the script the failure points at, where there is one.
    #[serde(default)]
    pub line: Option<u32>,
    /// A traceback limited to the script's own frames.
    #[serde(default)]
    pub traceback: Option<String>,
}

/// The kinds of failure the runner reports. Their names are the `kind` of the
/// HTTP error body.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ScriptErrorKind {
    /// The request does not fit the script: `input` was sent and `main`
    /// takes no parameter, or `main` requires one and none was sent.
    InvalidRequest,
    SyntaxError,
    MissingMain,
    ScriptException,
    InvalidResult,
    ResultTooLarge,
    /// The script called `sys.exit()`: it ended without a result.
    WorkerExited,
    /// An allocation failed (MemoryError) under the jail's address-space limit.
    MemoryLimit,
    /// The runner itself failed unexpectedly: our fault, not the script's.
    Internal,
}

impl ScriptErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptErrorKind::InvalidRequest => "invalid_request",
            ScriptErrorKind::SyntaxError => "syntax_error",
            ScriptErrorKind::MissingMain => "missing_main",
            ScriptErrorKind::ScriptException => "script_exception",
            ScriptErrorKind::InvalidResult => "invalid_result",
            ScriptErrorKind::ResultTooLarge => "result_too_large",
            ScriptErrorKind::WorkerExited => "worker_exited",
            ScriptErrorKind::MemoryLimit => "memory_limit",
            ScriptErrorKind::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn examples() -> Value {
        serde_json::from_str(include_str!("../../../python/protocol_examples.json")).unwrap()
    }

    #[test]
    fn an_input_of_null_is_an_input_and_none_is_no_field() {
        let job: ToRunner =
            serde_json::from_str(r#"{"type":"job","script":"x","input":null,"max_result_bytes":1,"max_files":0,"max_files_bytes":0}"#).unwrap();
        let ToRunner::Job { input, .. } = &job;
        assert_eq!(input.as_ref().map(|i| i.get()), Some("null"));
        let none = ToRunner::Job {
            script: "x".into(),
            input: None,
            max_result_bytes: 1,
            max_files: 0,
            max_files_bytes: 0,
        };
        assert!(!serde_json::to_string(&none).unwrap().contains("input"));
    }

    #[test]
    fn the_file_caps_are_the_runners() {
        let runner = include_str!("../../../python/pyexec_runner/outputs.py");
        let constant = |name: &str| -> usize {
            runner
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = ")))
                .unwrap_or_else(|| panic!("outputs.py defines {name}"))
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(constant("MAX_OMITTED_LISTED"), MAX_OMITTED_LISTED);
        assert_eq!(constant("MAX_FILE_NAME_BYTES"), MAX_FILE_NAME_BYTES);
    }

    #[test]
    fn every_example_to_the_runner_round_trips() {
        for example in examples()["to_runner"].as_array().unwrap() {
            let message: ToRunner = serde_json::from_value(example.clone()).unwrap();
            assert_eq!(serde_json::to_value(&message).unwrap(), *example);
        }
    }

    #[test]
    fn every_example_from_the_runner_decodes() {
        let mut seen = Vec::new();
        for example in examples()["from_runner"].as_array().unwrap() {
            let text = example.to_string();
            match serde_json::from_str::<FromRunner>(&text).unwrap() {
                FromRunner::Ready(v) => {
                    assert!(!v.python.is_empty());
                    seen.push("ready".to_string());
                }
                FromRunner::Result { result, files } => {
                    assert_eq!(
                        serde_json::from_str::<Value>(result.get()).unwrap(),
                        example["result"]
                    );
                    let listed = example["files"].as_array().map_or(0, Vec::len);
                    assert_eq!(files.files.len(), listed);
                    assert_eq!(files.truncated, example["files_truncated"] == true);
                    seen.push(
                        if listed > 0 {
                            "result with files"
                        } else {
                            "result"
                        }
                        .to_string(),
                    );
                }
                FromRunner::Error(e) => {
                    assert_eq!(e.kind.as_str(), example["kind"].as_str().unwrap());
                    assert_eq!(e.message, example["message"].as_str().unwrap());
                    seen.push(e.kind.as_str().to_string());
                }
            }
        }
        for kind in [
            "ready",
            "result",
            "result with files",
            "invalid_request",
            "syntax_error",
            "script_exception",
            "worker_exited",
        ] {
            assert!(seen.iter().any(|s| s == kind), "no example of {kind}");
        }
    }

    #[test]
    fn an_unknown_message_type_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<FromRunner>(r#"{"type":"hello"}"#).is_err());
        assert!(serde_json::from_str::<FromRunner>(
            r#"{"type":"error","kind":"nope","message":""}"#
        )
        .is_err());
        assert!(serde_json::from_str::<FromRunner>("[1,2]").is_err());
        assert!(serde_json::from_str::<FromRunner>(r#"{"type":"result","result":[1]}"#).is_err());
    }
}
