//! The real server's start-up: the sandbox and its self-check, the pool, the
//! socket, then [`crate::run`] until a signal. Any failure before serving is
//! an error that says what is missing and how to fix it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pyexec_worker::{ForkSandbox, Sandbox, SpawnSandbox};
use tokio::net::TcpListener;

use crate::callers::{AuthMode, Callers, CallersConfig, KeyDefaults};
use crate::config::{Config, Isolation};
use crate::metrics::{BuildInfo, Metrics};
use crate::pool_events::{PhaseEvents, ZygoteEvents};
use crate::state::AppState;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    log_config(&config);
    let metrics = Arc::new(
        Metrics::new(
            config.timeout,
            config.queue_timeout,
            config.spawn_timeout,
            config.metrics_max_keys,
        )
        .context("setting up the metrics registry")?,
    );
    let callers = start_callers(&config).await?;
    let cannot = "the sandbox cannot be set up";
    match config.isolation {
        Isolation::Spawn => {
            let sandbox = SpawnSandbox::new(config.nsjail_config()).context(cannot)?;
            sandbox.observe_phases(Arc::new(PhaseEvents::new(metrics.clone())));
            serve_on(config, sandbox, metrics, callers).await
        }
        Isolation::Fork => {
            let events = Arc::new(ZygoteEvents::new(metrics.clone()));
            let load = config.zygote_load();
            let sandbox = ForkSandbox::start(
                config.nsjail_config(),
                config.recycling(),
                load,
                config.zygote_pages,
                events,
            )
            .await
            .context(cannot)?;
            sandbox.observe_phases(Arc::new(PhaseEvents::new(metrics.clone())));
            serve_on(config, sandbox, metrics, callers).await
        }
    }
}

/// Self-check, socket, pool, serve until a signal, close: the same for every
/// isolation mode.
async fn serve_on<S: Sandbox>(
    config: Config,
    sandbox: S,
    metrics: Arc<Metrics>,
    callers: Arc<Callers>,
) -> anyhow::Result<()> {
    let sandbox = Arc::new(sandbox);
    let report = match sandbox.self_check().await {
        Ok(report) => report,
        Err(error) => {
            close(&sandbox).await;
            return Err(error)
                .context("the sandbox self-check failed; refusing to run scripts without it");
        }
    };
    tracing::info!(
        isolation = %report.isolation,
        python_version = %report.versions.python,
        numpy_version = %report.versions.numpy,
        pandas_version = %report.versions.pandas,
        cgroup_mode = %report.cgroup_mode,
        nsjail_version = %report.nsjail_version,
        findings = %report.findings.join("; "),
        "sandbox self-check passed"
    );
    metrics.set_build_info(BuildInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        isolation: report.isolation.clone(),
        nsjail_version: report.nsjail_version.clone(),
        python_version: report.versions.python.clone(),
        numpy_version: report.versions.numpy.clone(),
        pandas_version: report.versions.pandas.clone(),
    });

    // Bound before the pool starts, so a taken port fails before any worker is made.
    let listener = match TcpListener::bind(("0.0.0.0", config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            close(&sandbox).await;
            return Err(error)
                .with_context(|| format!("cannot listen on 0.0.0.0:{} (PORT)", config.port));
        }
    };
    let address = listener.local_addr().context("reading the bound address")?;

    let state = AppState::start(&config, sandbox.clone(), metrics, callers);
    tracing::info!(address = %address, port = address.port(), "listening");
    crate::run(listener, state, crate::shutdown::signal_received()).await;
    close(&sandbox).await;
    Ok(())
}

/// The store and the callers module. With keys, a store that can't be opened
/// (unwritable, corrupt, a newer schema, an unreachable database) stops the
/// start, saying why; without keys it only costs the snippets, and a warning.
pub async fn start_callers(config: &Config) -> anyhow::Result<Arc<Callers>> {
    let store = match pyexec_store::open(config.store_config()).await {
        Ok(store) => {
            tracing::info!(store = %store.describe(), "store open");
            Some(store)
        }
        Err(error) if config.auth == AuthMode::Keys => {
            return Err(anyhow::anyhow!("{error}")).context(
                "the store of API keys cannot be opened, and PYEXEC_AUTH=keys needs it \
                 (PYEXEC_DATA_DIR, or PYEXEC_DATABASE_URL)",
            );
        }
        Err(error) => {
            tracing::warn!(
                error = %error,
                "the store cannot be opened: saved snippets are unavailable (answers 503 store_unavailable)"
            );
            None
        }
    };
    if config.auth == AuthMode::None {
        tracing::warn!(
            "PYEXEC_AUTH=none: anyone who can reach this port can run code here; set PYEXEC_AUTH=keys to require API keys"
        );
    }
    let callers_config = CallersConfig {
        auth: config.auth,
        defaults: KeyDefaults {
            rate_per_s: config.key_rate,
            burst: config.key_burst,
            max_concurrent: config.key_max_concurrent,
            cpu_s_per_day: config.key_cpu_s_per_day,
            weight: config.key_weight,
        },
        server_timeout: config.timeout,
        server_memory_mb: config.memory_mb,
        refresh_every: KEY_REFRESH,
        meter_every: METER_EVERY,
        meter_max_rows: METER_MAX_ROWS,
        shared_store: config.database_url.is_some(),
    };
    Callers::start(callers_config, store, instance_id())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("reading the API keys from the store")
}

/// How often the key cache is refreshed from the store: a key revoked or
/// changed elsewhere takes effect within this (the promise is 5 s).
const KEY_REFRESH: Duration = Duration::from_secs(2);
/// How often metered usage is written.
const METER_EVERY: Duration = Duration::from_secs(1);
/// Rows of usage (key × hour × outcome) held while the store is away: a row
/// is about 100 bytes, so 10 MB at most.
const METER_MAX_ROWS: usize = 100_000;

/// This process's id in the store's usage batches and slot holds: random,
/// so that two servers (or one restarted) never share one.
fn instance_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Not random, still unique enough per process and start.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (now ^ u64::from(std::process::id())).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long closing the sandbox may take at exit: ending a zygote and
/// removing the cgroup root. The shutdown must end within the grace period
/// plus one second.
const SANDBOX_CLOSE: Duration = Duration::from_millis(250);

/// Only now is every worker's cgroup gone, so the root (and the zygote) can
/// go too. Bounded: exiting matters more than tidying.
async fn close<S: Sandbox>(sandbox: &S) {
    if tokio::time::timeout(SANDBOX_CLOSE, sandbox.close())
        .await
        .is_err()
    {
        tracing::warn!("the sandbox did not close in time; exiting without it");
    }
}

/// The configuration at start-up. Nothing in it is secret: paths and limits.
fn log_config(config: &Config) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        port = config.port,
        auth = config.auth.as_str(),
        data_dir = %config.data_dir.display(),
        database = if config.database_url.is_some() { "postgres (PYEXEC_DATABASE_URL)" } else { "embedded" },
        isolation = config.isolation.as_str(),
        timeout_s = config.timeout.as_secs_f64(),
        cpu_seconds = config.cpu_seconds(),
        max_script_chars = config.max_script_chars,
        max_body_bytes = config.max_body_bytes(),
        pool_size = config.pool_size,
        queue_max = config.queue_max,
        queue_timeout_s = config.queue_timeout.as_secs_f64(),
        max_jobs = config.max_jobs,
        max_parallel_spawns = config.max_parallel_spawns,
        nsjail = %config.nsjail.display(),
        python = %config.python.display(),
        nsjail_config = %config.nsjail_config.display(),
        runner_dir = %config.runner_dir.display(),
        memory_mb = config.memory_mb,
        max_processes = config.max_processes,
        max_file_mb = config.max_file_mb,
        max_open_files = config.max_open_files,
        cpus = config.cpus,
        max_output_bytes = config.max_output_bytes,
        max_result_bytes = config.max_result_bytes,
        spawn_timeout_s = config.spawn_timeout.as_secs_f64(),
        zygote_max_forks = config.zygote_max_forks,
        zygote_max_age_s = config.zygote_max_age.as_secs_f64(),
        shutdown_grace_s = config.shutdown_grace.as_secs_f64(),
        cgroup_parent = %config.cgroup_parent,
        cgroup_mount = %config.cgroup_mount.display(),
        gcp_project = config.gcp_project.as_deref().unwrap_or(""),
        "starting pyexec"
    );
}
