//! The rules between variables: each refuses a combination of values, each
//! fine alone, that would otherwise fail request after request.

use pyexec_worker::max_answer_frame;

use super::table::{
    MAX_CONNECTIONS, MAX_INPUT_BYTES, MAX_JOBS, MAX_OUTPUT_FILES, MAX_OUTPUT_FILES_BYTES,
    MAX_RESULT_BYTES, MAX_SCRIPT_CHARS, POOL_SIZE, QUEUE_MAX, QUEUE_TIMEOUT,
};
use super::{Config, ConfigError, MAX_JSON_BYTES_PER_CHAR};

/// The largest job frame the runner accepts (`MAX_JOB_FRAME_BYTES` in
/// python/pyexec_runner/protocol.py; a test checks the two agree).
const RUNNER_MAX_JOB_FRAME: usize = 16 << 20;
/// Room in a job frame beyond the script's JSON string: the envelope.
const JOB_ENVELOPE: usize = 1024;

/// The first rule `config` breaks, naming the variables involved.
pub(super) fn check_together(config: &Config) -> Result<(), ConfigError> {
    let conflict = |names: &[&'static str], why: String| {
        Err(ConfigError::Conflict {
            names: names.to_vec(),
            why,
        })
    };
    if config.pool_size == 0 && config.queue_max == 0 {
        return conflict(
            &[POOL_SIZE.name, QUEUE_MAX.name],
            "with PYEXEC_POOL_SIZE=0 every request waits for its own spawn, so PYEXEC_QUEUE_MAX must be at least 1".into(),
        );
    }
    if config.pool_size == 0 && config.queue_timeout.is_zero() {
        return conflict(
            &[POOL_SIZE.name, QUEUE_TIMEOUT.name],
            "with PYEXEC_POOL_SIZE=0 every request waits for its own spawn (about 0.3 s), so PYEXEC_QUEUE_TIMEOUT=0 would refuse every request".into(),
        );
    }
    if config.max_connections <= config.max_jobs + config.queue_max {
        return conflict(
            &[MAX_CONNECTIONS.name, MAX_JOBS.name, QUEUE_MAX.name],
            format!(
                "PYEXEC_MAX_CONNECTIONS={} leaves no connection for health probes once PYEXEC_MAX_JOBS ({}) jobs run and PYEXEC_QUEUE_MAX ({}) wait; it must be more than their sum",
                config.max_connections, config.max_jobs, config.queue_max
            ),
        );
    }
    // The job frame carries the script, JSON-escaped, and the input as sent.
    let largest_job_frame = config
        .max_script_chars
        .saturating_mul(MAX_JSON_BYTES_PER_CHAR)
        .saturating_add(config.max_input_bytes)
        .saturating_add(JOB_ENVELOPE);
    if largest_job_frame > RUNNER_MAX_JOB_FRAME {
        return conflict(
            &[MAX_SCRIPT_CHARS.name, MAX_INPUT_BYTES.name],
            format!(
                "PYEXEC_MAX_SCRIPT_CHARS={} with PYEXEC_MAX_INPUT_BYTES={} allows a job frame of up to {largest_job_frame} bytes, over the runner's {RUNNER_MAX_JOB_FRAME}-byte limit; with this input cap at most {} characters fit",
                config.max_script_chars,
                config.max_input_bytes,
                RUNNER_MAX_JOB_FRAME.saturating_sub(JOB_ENVELOPE + config.max_input_bytes)
                    / MAX_JSON_BYTES_PER_CHAR
            ),
        );
    }
    // The worker reads answer frames of up to the result cap plus the output
    // files (base64) plus room for the envelope and a traceback; the frame's
    // length is 4 bytes.
    let largest_answer = max_answer_frame(config.max_result_bytes, config.file_caps());
    if largest_answer > u64::from(u32::MAX) {
        return conflict(
            &[
                MAX_RESULT_BYTES.name,
                MAX_OUTPUT_FILES.name,
                MAX_OUTPUT_FILES_BYTES.name,
            ],
            format!(
                "PYEXEC_MAX_RESULT_BYTES={} with the output files' caps ({} files, {} bytes) allows an answer frame of {largest_answer} bytes, over the 4-byte length's {}",
                config.max_result_bytes,
                config.max_output_files,
                config.max_output_files_bytes,
                u32::MAX
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::read_vars;

    /// Values fine on their own, refused together, each error naming the
    /// variables involved; and the largest values that still fit are accepted.
    #[test]
    fn values_are_checked_against_each_other() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars, &[&str])] = &[
            (
                &[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_MAX", "0")],
                &["PYEXEC_POOL_SIZE", "PYEXEC_QUEUE_MAX"],
            ),
            (
                &[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_TIMEOUT", "0")],
                &["PYEXEC_POOL_SIZE", "PYEXEC_QUEUE_TIMEOUT"],
            ),
            (
                &[("PYEXEC_MAX_CONNECTIONS", "20")],
                &[
                    "PYEXEC_MAX_CONNECTIONS",
                    "PYEXEC_MAX_JOBS",
                    "PYEXEC_QUEUE_MAX",
                ],
            ),
            (
                &[("PYEXEC_MAX_SCRIPT_CHARS", "2621270")],
                &["PYEXEC_MAX_SCRIPT_CHARS", "PYEXEC_MAX_INPUT_BYTES"],
            ),
            (
                &[
                    ("PYEXEC_MAX_SCRIPT_CHARS", "1000"),
                    ("PYEXEC_MAX_INPUT_BYTES", "16770193"),
                ],
                &["PYEXEC_MAX_SCRIPT_CHARS", "PYEXEC_MAX_INPUT_BYTES"],
            ),
            (
                &[("PYEXEC_MAX_RESULT_BYTES", "4287447720")],
                &[
                    "PYEXEC_MAX_RESULT_BYTES",
                    "PYEXEC_MAX_OUTPUT_FILES",
                    "PYEXEC_MAX_OUTPUT_FILES_BYTES",
                ],
            ),
            (
                &[
                    ("PYEXEC_MAX_RESULT_BYTES", "1000"),
                    ("PYEXEC_MAX_OUTPUT_FILES_BYTES", "3300000000"),
                ],
                &[
                    "PYEXEC_MAX_RESULT_BYTES",
                    "PYEXEC_MAX_OUTPUT_FILES",
                    "PYEXEC_MAX_OUTPUT_FILES_BYTES",
                ],
            ),
        ];
        for (vars, names) in cases {
            let err = read_vars(vars, 2).expect_err(&format!("{vars:?} accepted"));
            assert_eq!(err.names(), *names, "{err}");
            let message = err.to_string();
            assert!(names.iter().all(|name| message.contains(name)), "{message}");
        }
        let largest = read_vars(
            &[
                ("PYEXEC_MAX_SCRIPT_CHARS", "2621269"),
                ("PYEXEC_MAX_RESULT_BYTES", "4287447719"),
            ],
            2,
        )
        .unwrap();
        // The largest script and input still fit the runner's job frame, the
        // script escaped.
        let input = format!("\"{}\"", "x".repeat(largest.max_input_bytes - 2));
        let job = pyexec_worker::Job {
            script: "\u{1}".repeat(largest.max_script_chars),
            input: Some(serde_json::value::RawValue::from_string(input).unwrap()),
            limits: pyexec_worker::JobLimits {
                timeout: largest.timeout,
                memory_bytes: largest.memory_mb << 20,
            },
            max_result_bytes: largest.max_result_bytes,
            file_caps: largest.file_caps(),
        };
        assert!(job.frame_len() <= RUNNER_MAX_JOB_FRAME);
        assert!(
            max_answer_frame(largest.max_result_bytes, largest.file_caps()) <= u64::from(u32::MAX)
        );
        // A pool of zero with a queue and a wait is fine.
        assert!(read_vars(&[("PYEXEC_POOL_SIZE", "0")], 2).is_ok());
    }

    /// The job-frame cap mirrors the runner's; if one changes, so must the other.
    #[test]
    fn the_job_frame_cap_is_the_runners() {
        let runner = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../python/pyexec_runner/protocol.py"),
        )
        .unwrap();
        let line = runner
            .lines()
            .find_map(|l| l.strip_prefix("MAX_JOB_FRAME_BYTES = "))
            .expect("protocol.py defines MAX_JOB_FRAME_BYTES");
        let value: usize = line
            .split('*')
            .map(|factor| factor.trim().parse::<usize>().unwrap())
            .product();
        assert_eq!(value, RUNNER_MAX_JOB_FRAME);
    }
}
