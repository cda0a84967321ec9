//! The runtime under the job filter (`python/runtime_exercise.py`): every
//! public module of numpy, pandas and matplotlib, one job per package (each
//! stays within its memory cgroup), and the smoke calls in a job of their
//! own. The same walk run on the host, once, is the baseline: a module that
//! imports there but not in a job is a failure, named with its error.

use std::collections::BTreeMap;
use std::time::Duration;

use pyexec_worker::{Job, JobLimits};
use tokio::sync::OnceCell;

use crate::common::{self, scaled};
use crate::harness::{shown, with_main, Checks, Jail, Kind, Ran};

const EXERCISE: &str = include_str!("../../../python/runtime_exercise.py");

/// {module: its import error, or `None`}, as `exercise()` reports it.
type Imports = BTreeMap<String, Option<String>>;

/// The host's walk, shared by both modes' tests.
static HOST: OnceCell<Result<Imports, String>> = OnceCell::const_new();

pub async fn runtime<K: Kind>(jail: &Jail<K>, checks: &mut Checks) {
    checks.section("runtime");
    let host = HOST
        .get_or_init(|| async {
            tokio::task::spawn_blocking(host_walk)
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        })
        .await;
    let host = match host {
        Ok(host) => host,
        Err(why) => {
            checks.check(format!("runtime: the walk ran on the host ({why})"), false);
            return;
        }
    };
    for part in ["numpy", "pandas", "matplotlib", "smoke"] {
        let args = match part {
            "smoke" => "walk=False".to_string(),
            "matplotlib" => r#"calls=False, packages=("matplotlib", "mpl_toolkits")"#.into(),
            _ => format!(r#"calls=False, packages=("{part}",)"#),
        };
        let script = format!("{EXERCISE}\nprint(\"REPORT\", json.dumps(exercise({args})))\n");
        let (ran, peak) = run(jail, &script).await;
        checks.context(ran.describe(&format!("runtime-{part}")));
        let report: Option<serde_json::Value> = serde_json::from_str(&ran.line("REPORT")).ok();
        let Some(report) = report.filter(|_| ran.answered()) else {
            checks.check(
                format!("runtime: the {part} job answered with its report"),
                false,
            );
            continue;
        };
        if part == "smoke" {
            let smoke: BTreeMap<String, Option<String>> =
                serde_json::from_value(report["smoke"].clone()).unwrap_or_default();
            let broken: Vec<String> = smoke
                .iter()
                .filter_map(|(call, error)| Some(format!("{call}: {}", error.as_ref()?)))
                .collect();
            checks.check(
                format!(
                    "runtime: all {} smoke calls work under the job filter (numpy, pandas, \
                     matplotlib PNG/SVG/PDF, multiprocessing with each start method, threads, \
                     fork, subprocess, tempfile, outputs, time, signals, sockets, asyncio, \
                     stdlib){}",
                    smoke.len(),
                    failed(&broken)
                ),
                !smoke.is_empty() && broken.is_empty(),
            );
        } else {
            let inside: Imports =
                serde_json::from_value(report["imports"].clone()).unwrap_or_default();
            let new: Vec<String> = inside
                .iter()
                .filter(|(module, _)| matches!(host.get(*module), None | Some(None)))
                .filter_map(|(module, error)| Some(format!("{module}: {}", error.as_ref()?)))
                .collect();
            checks.check(
                format!(
                    "runtime: every public module of {part} that imports on the host imports \
                     under the job filter ({} walked){}",
                    inside.len(),
                    failed(&new)
                ),
                !inside.is_empty() && new.is_empty(),
            );
            let excluded: Vec<&str> = inside
                .keys()
                .filter(|m| matches!(host.get(*m), Some(Some(_))))
                .map(String::as_str)
                .collect();
            checks.info(format!(
                "runtime: {part}: left out, they fail on the host too: {}",
                excluded.join(" ")
            ));
        }
        checks.info(format!(
            "runtime: {part}: peak memory {} MiB",
            shown(peak.map(|b| b >> 20))
        ));
    }
}

fn failed(what: &[String]) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("; failed inside only: {}", what.join("; "))
    }
}

/// `script` as a job with room for a whole package's walk.
async fn run<K: Kind>(jail: &Jail<K>, script: &str) -> (Ran, Option<u64>) {
    let limits = JobLimits {
        timeout: scaled(Duration::from_secs(60)),
        memory_bytes: 256 << 20,
    };
    let job = Job::new(with_main(script), limits, 10 << 20);
    let mut probe = jail.worker().await;
    probe.run_job(&job, scaled(Duration::from_secs(90))).await;
    let done = probe.finish().await;
    (done.ran, done.counters.memory_peak)
}

/// The walk on the host, in an empty home, as the jail's environment has it.
fn host_walk() -> Result<Imports, String> {
    let home = std::env::temp_dir().join(format!("pyexec-runtime-host-{}", std::process::id()));
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let output = std::process::Command::new(&common::config("runtime").python)
        .args(["-I", "-X", "utf8", "-B"])
        .arg(common::repo().join("python/runtime_exercise.py"))
        .arg("--no-smoke")
        .current_dir(&home)
        .env_clear()
        .envs([
            ("HOME", home.as_path()),
            ("MPLCONFIGDIR", home.as_path()),
            ("PYEXEC_OUTPUTS_DIR", home.join("outputs").as_path()),
        ])
        .envs([
            ("LANG", "C.UTF-8"),
            ("TZ", "UTC"),
            ("OPENBLAS_NUM_THREADS", "1"),
            ("OMP_NUM_THREADS", "1"),
        ])
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&home);
    let output = output?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        format!("{e}; {}", tail.join(" | "))
    })?;
    serde_json::from_value(report["imports"].clone()).map_err(|e| e.to_string())
}
