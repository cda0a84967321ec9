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

/// `--help` prints the variables from the parser's own table;
/// docs/configuration.md's table must be exactly that, row by row, and the
/// README's short table a selection of those rows, in the same order.
#[test]
fn the_docs_list_the_variables_as_help_prints_them() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pyexec"))
        .arg("--help")
        .output()
        .expect("run pyexec");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let header = "| variable | default | meaning |";
    let from_help = table_after(&help, header);
    assert!(from_help.len() > 20, "no variable table in --help:\n{help}");
    assert!(from_help
        .iter()
        .any(|l| l.starts_with("| `PYEXEC_POOL_SIZE` |")));

    let doc = std::fs::read_to_string(common::repo_root().join("docs/configuration.md")).unwrap();
    let in_doc = table_after(&doc, header);
    for (row, (doc_row, help_row)) in in_doc.iter().zip(&from_help).enumerate() {
        assert_eq!(
            doc_row, help_row,
            "docs/configuration.md table row {row} differs from --help"
        );
    }
    assert_eq!(
        in_doc.len(),
        from_help.len(),
        "docs/configuration.md has {} table rows, --help {}:\n{}",
        in_doc.len(),
        from_help.len(),
        from_help.join("\n")
    );

    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let in_readme = table_after(&readme, header);
    assert!(
        in_readme.len() > 2,
        "no variable table in the README under {header}"
    );
    let mut rest = from_help.iter();
    for readme_row in &in_readme {
        assert!(
            rest.any(|help_row| help_row == readme_row),
            "README table row {readme_row:?} is not a row of --help, or is out of its order"
        );
    }
}

/// A copy of the repository's jail policy with one wall broken by `edit`.
fn broken_policy(name: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let policy = std::fs::read_to_string(common::repo_root().join("nsjail.cfg")).unwrap();
    let broken = edit(&policy);
    assert_ne!(broken, policy, "the edit for {name} changed nothing");
    let path =
        std::env::temp_dir().join(format!("pyexec-broken-{name}-{}.cfg", std::process::id()));
    std::fs::write(&path, broken).unwrap();
    path
}

/// Starts the server on a broken sandbox and expects it to refuse, naming
/// the wall that is missing, without ever listening.
async fn refuses_naming(env: &[(&str, &str)], wall: &str) {
    let mut server = TestServer::spawn(env);
    let status = server
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("pyexec served without the {wall} wall"));
    assert!(!status.success());
    // The log reader may still be draining the pipe when the process is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.logs().join("\n").contains("could not start")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = server.logs().join("\n");
    assert!(
        logs.contains(&format!("the {wall} wall is missing")),
        "the refusal should name the {wall} wall:\n{logs}"
    );
    assert!(!logs.contains("\"listening\""), "it listened:\n{logs}");
}

#[tokio::test]
async fn without_the_jails_seccomp_policy_it_refuses() {
    let cfg = broken_policy("seccomp", |p| {
        p.lines()
            .filter(|l| !l.starts_with("seccomp_string:"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    refuses_naming(
        &[("PYEXEC_NSJAIL_CONFIG", cfg.to_str().unwrap())],
        "jail seccomp policy",
    )
    .await;
}

/// In spawn mode the jail's network namespace is the job's. (A fork-mode
/// child makes a network namespace of its own besides, so there the same
/// broken policy still leaves jobs without a network: the e2e isolation
/// tests cover that child's namespace.)
#[tokio::test]
async fn without_a_network_namespace_it_refuses() {
    let cfg = broken_policy("network", |p| {
        p.replace("clone_newnet: true", "clone_newnet: false")
    });
    refuses_naming(
        &[
            ("PYEXEC_ISOLATION", "spawn"),
            ("PYEXEC_NSJAIL_CONFIG", cfg.to_str().unwrap()),
        ],
        "network namespace",
    )
    .await;
}

#[tokio::test]
async fn with_proc_mounted_it_refuses() {
    let cfg = broken_policy("proc", |p| {
        p.replace("mount_proc: false", "mount_proc: true")
    });
    refuses_naming(
        &[("PYEXEC_NSJAIL_CONFIG", cfg.to_str().unwrap())],
        "no /proc",
    )
    .await;
}

#[tokio::test]
async fn with_root_inside_the_jail_it_refuses() {
    let cfg = broken_policy("uid", |p| {
        p.replace("inside_id: \"1000\"", "inside_id: \"0\"")
    });
    refuses_naming(
        &[("PYEXEC_NSJAIL_CONFIG", cfg.to_str().unwrap())],
        "user namespace",
    )
    .await;
}

#[tokio::test]
async fn with_a_writable_host_directory_it_refuses() {
    let shared = std::env::temp_dir().join(format!("pyexec-rw-{}", std::process::id()));
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let bind = format!(
        "mount {{ src: \"{}\" dst: \"/opt\" is_bind: true rw: true }}\n",
        shared.display()
    );
    let cfg = broken_policy("writable", |p| format!("{p}\n{bind}"));
    refuses_naming(
        &[("PYEXEC_NSJAIL_CONFIG", cfg.to_str().unwrap())],
        "read-only filesystem",
    )
    .await;
    let _ = std::fs::remove_dir_all(&shared);
}

#[tokio::test]
async fn without_the_jobs_own_filter_it_refuses() {
    // A copy of the runner whose seal() forgets the job's seccomp filter.
    let runner = std::env::temp_dir().join(format!("pyexec-nofilter-{}", std::process::id()));
    std::fs::create_dir_all(&runner).unwrap();
    for file in ["runner.py", "zygote.py", "confine.py"] {
        let mut text =
            std::fs::read_to_string(common::repo_root().join("python").join(file)).unwrap();
        if file == "confine.py" {
            let sealed = "    install_job_filter()\n";
            assert!(text.contains(sealed));
            text = text.replacen(sealed, "    pass\n", 1);
        }
        std::fs::write(runner.join(file), text).unwrap();
    }
    let package = runner.join("pyexec_runner");
    std::fs::create_dir_all(&package).unwrap();
    for entry in std::fs::read_dir(common::repo_root().join("python/pyexec_runner")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, package.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::set_permissions(&runner, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    refuses_naming(
        &[("PYEXEC_RUNNER_DIR", runner.to_str().unwrap())],
        "job seccomp filter",
    )
    .await;
    let _ = std::fs::remove_dir_all(&runner);
}
