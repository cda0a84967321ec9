//! The messages between the server and a zygote, on its SOCK_SEQPACKET
//! control socket: one JSON object per message, a fork request carrying the
//! child's job socket and output pipes in SCM_RIGHTS.
//!
//! ```text
//! zygote → server  {"type":"ready","python":…,"numpy":…,"pandas":…}
//! server → zygote  {"type":"fork","id":N}  + SCM_RIGHTS [job socket, stdout, stderr]
//! zygote → server  {"type":"forked","id":N,"pid":P}        P: the child's pid in the jail
//!                  {"type":"fork_failed","id":N,"message":…}
//! zygote → server  {"type":"exited","pid":P,"exit_code":C,"signal":S}   when reaped
//! ```
//!
//! `python/zygote_protocol_examples.json` holds example messages that both
//! this module's tests and `python/test_zygote_protocol.py` decode.

use serde::{Deserialize, Serialize};

use crate::jail::nsjail::describe_signal;
use crate::job::protocol::Versions;

/// What the server asks of a zygote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToZygote {
    /// Fork one job child holding the descriptors sent with this message.
    Fork { id: u64 },
}

/// What a zygote tells the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromZygote {
    /// Warm (numpy and pandas imported); the first message, once.
    Ready(Versions),
    Forked {
        id: u64,
        /// The child's pid in the zygote's (the jail's) pid namespace.
        pid: i32,
    },
    ForkFailed {
        /// `None` when the request itself could not be read.
        id: Option<u64>,
        message: String,
    },
    /// A child the zygote reaped.
    Exited {
        pid: i32,
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
}

/// How a reaped child ended, in words: "exit status 0", "killed by signal
/// 9 (SIGKILL)".
pub fn describe_exit(exit_code: Option<i32>, signal: Option<i32>) -> String {
    match (exit_code, signal) {
        (_, Some(signal)) => describe_signal(signal),
        (Some(code), None) => format!("exit status {code}"),
        (None, None) => "unknown status".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn examples() -> Value {
        serde_json::from_str(include_str!(
            "../../../../python/zygote_protocol_examples.json"
        ))
        .unwrap()
    }

    #[test]
    fn every_request_to_the_zygote_round_trips() {
        for example in examples()["to_zygote"].as_array().unwrap() {
            let message: ToZygote = serde_json::from_value(example.clone()).unwrap();
            assert_eq!(serde_json::to_value(&message).unwrap(), *example);
        }
    }

    #[test]
    fn every_message_from_the_zygote_decodes_and_each_kind_has_an_example() {
        let mut kinds = Vec::new();
        for example in examples()["from_zygote"].as_array().unwrap() {
            let message: FromZygote = serde_json::from_value(example.clone()).unwrap();
            kinds.push(match message {
                FromZygote::Ready(versions) => {
                    assert_eq!(versions.numpy, example["numpy"].as_str().unwrap());
                    "ready"
                }
                FromZygote::Forked { id, pid } => {
                    assert_eq!((id, pid), (7, 12));
                    "forked"
                }
                FromZygote::ForkFailed { id, message } => {
                    assert_eq!(id, example["id"].as_u64());
                    assert!(!message.is_empty());
                    "fork_failed"
                }
                FromZygote::Exited {
                    exit_code, signal, ..
                } => {
                    assert!(exit_code.is_some() != signal.is_some());
                    "exited"
                }
            });
        }
        for kind in ["ready", "forked", "fork_failed", "exited"] {
            assert!(kinds.contains(&kind), "no example of {kind}");
        }
    }

    #[test]
    fn exits_are_described_by_their_cause() {
        assert_eq!(describe_exit(Some(0), None), "exit status 0");
        assert_eq!(describe_exit(None, Some(9)), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(None, None), "unknown status");
    }

    #[test]
    fn an_unknown_message_is_an_error_not_a_panic() {
        for text in [
            r#"{"type":"hello"}"#,
            r#"{"type":"forked","id":-1,"pid":3}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<FromZygote>(text).is_err(), "{text}");
        }
    }
}
