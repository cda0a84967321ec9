//! How slow the machine running the tests is, and waits stretched by it;
//! shared by the server's tests and the worker's (worker/tests/real_jail.rs
//! includes this file by path).

use std::time::Duration;

/// How many times slower than a development machine this one runs:
/// `PYEXEC_TEST_TIME_SCALE`, default 1. The cgroup v2 VM emulates its CPU
/// (scripts/vm-test.sh) at a tenth of the host's speed or less; there every
/// time limit a test gives a server, and every wait of the tests themselves,
/// is stretched by this factor. The tests check behaviour, not speed.
pub fn time_scale() -> f64 {
    match std::env::var("PYEXEC_TEST_TIME_SCALE") {
        Err(_) => 1.0,
        Ok(value) => value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 1.0)
            .unwrap_or_else(|| panic!("PYEXEC_TEST_TIME_SCALE={value:?}: want a number >= 1")),
    }
}

/// `duration` stretched by [`time_scale`].
pub fn scaled(duration: Duration) -> Duration {
    duration.mul_f64(time_scale())
}
