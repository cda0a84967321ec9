//! The `pyexec` binary: configuration and logging, then the server.

use std::process::ExitCode;
use std::time::Duration;

use pyexec_server::config::{self, Config};

/// EX_USAGE: a bad configuration value.
const EXIT_BAD_CONFIG: u8 = 64;
/// The server could not start (no sandbox, port taken, …).
const EXIT_START_FAILED: u8 = 1;
/// How long the runtime's remaining tasks get once serving is over.
const RUNTIME_EXIT: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("keys") {
        return keys(&args[1..]);
    }
    if let Some(arg) = args.first() {
        return match arg.as_str() {
            "--help" | "-h" => {
                println!(
                    "pyexec {}: runs untrusted Python scripts in nsjail sandboxes over HTTP.\n",
                    env!("CARGO_PKG_VERSION")
                );
                println!(
                    "Configured only by environment variables:\n\n{}",
                    config::markdown_table()
                );
                ExitCode::SUCCESS
            }
            "--version" | "-V" => {
                println!("pyexec {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            other => {
                eprintln!(
                    "pyexec: unknown argument {other:?}; it takes none but `keys …` (see --help)"
                );
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }

    let config = match Config::from_env(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pyexec: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if let Err(error) = pyexec_server::logging::init(config.log_level, config.log_format) {
        eprintln!("pyexec: cannot set up logging: {error}");
        return ExitCode::from(EXIT_START_FAILED);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pyexec: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let served = runtime.block_on(pyexec_server::startup::serve(config));
    // Dropping the runtime would wait for blocking tasks without a bound; the
    // shutdown has already spent its time (grace + 1 s at most).
    runtime.shutdown_timeout(RUNTIME_EXIT);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // stderr for a person at a terminal, the log for Cloud Logging.
            eprintln!("pyexec: {error:#}");
            tracing::error!(error = %format!("{error:#}"), "pyexec could not start");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// `pyexec keys …`: manage API keys in the server's store, then exit.
fn keys(args: &[String]) -> ExitCode {
    use pyexec_server::keys_cli::{self, Failure};
    let config = match Config::from_env(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pyexec: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("pyexec: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let ran = runtime.block_on(async {
        tokio::time::timeout(keys_cli::COMMAND_TIMEOUT, keys_cli::run(args, &config)).await
    });
    match ran {
        Ok(Ok(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Ok(Err(Failure::Usage(message))) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Ok(Err(Failure::Store(message))) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_START_FAILED)
        }
        Err(_) => {
            eprintln!("pyexec keys: the store did not answer in time");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}
