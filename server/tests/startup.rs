//! The real binary refuses to start without its sandbox or with a bad
//! configuration, and says why.

mod common;

use std::time::Duration;

use common::TestServer;

#[tokio::test]
async fn a_bad_variable_exits_64_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .current_dir(common::repo_root())
        .env("PYEXEC_TIMEOUT", "soon")
        .output()
        .expect("run pyexec");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PYEXEC_TIMEOUT") && stderr.contains("soon"),
        "{stderr}"
    );
}

#[tokio::test]
async fn it_refuses_to_serve_without_nsjail() {
    let mut server = TestServer::spawn(&[("PYEXEC_NSJAIL", "/nonexistent/nsjail")]);
    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("pyexec kept running without nsjail");
    assert!(!status.success());
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("PYEXEC_NSJAIL"),
        "the error should name the variable:\n{logs}"
    );
    assert!(
        !logs.contains("\"listening\""),
        "it listened without a sandbox:\n{logs}"
    );
}

#[test]
fn help_prints_the_variable_table() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("--help")
        .output()
        .expect("run pyexec");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("| `PYEXEC_POOL_SIZE` |"), "{text}");
}
