//! The real binary refuses to start without its sandbox or with a bad
//! configuration, and says why.

mod common;

use std::time::Duration;

use common::TestServer;

#[tokio::test]
async fn a_bad_variable_exits_64_naming_it() {
    type Vars = &'static [(&'static str, &'static str)];
    let cases: [(Vars, &[&str]); 2] = [
        (&[("PYEXEC_TIMEOUT", "soon")], &["PYEXEC_TIMEOUT", "soon"]),
        // Each fine alone, but together every request would be refused.
        (
            &[("PYEXEC_POOL_SIZE", "0"), ("PYEXEC_QUEUE_TIMEOUT", "0")],
            &["PYEXEC_POOL_SIZE", "PYEXEC_QUEUE_TIMEOUT"],
        ),
    ];
    for (vars, named) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyexec"))
            .current_dir(common::repo_root())
            .envs(vars.iter().copied())
            .output()
            .expect("run pyexec");
        assert_eq!(output.status.code(), Some(64), "{vars:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(named.iter().all(|n| stderr.contains(n)), "{stderr}");
    }
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

/// The lines of the first Markdown table whose header is `header`.
fn table_after<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|line| line.trim() != header)
        .take_while(|line| line.starts_with('|'))
        .collect()
}

/// `--help` prints the variables from the parser's own table; the README's
/// Configuration table must be exactly that, row by row.
#[test]
fn the_readme_lists_the_variables_as_help_prints_them() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("--help")
        .output()
        .expect("run pyexec");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let header = "| variable | default | meaning |";
    let from_help = table_after(&help, header);
    assert!(from_help.len() > 20, "no variable table in --help:\n{help}");
    assert!(from_help
        .iter()
        .any(|l| l.starts_with("| `PYEXEC_POOL_SIZE` |")));
    let in_readme = table_after(&readme, header);
    for (row, (readme_row, help_row)) in in_readme.iter().zip(&from_help).enumerate() {
        assert_eq!(
            readme_row, help_row,
            "README table row {row} differs from --help"
        );
    }
    assert_eq!(
        in_readme.len(),
        from_help.len(),
        "the README table has {} rows, --help {}:\n{}",
        in_readme.len(),
        from_help.len(),
        from_help.join("\n")
    );
}
