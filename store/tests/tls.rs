//! TLS to Postgres, against a cluster that rejects plain-text TCP (so a
//! store that opens at all is encrypted), with libpq's `sslmode` meanings.

mod common;

use std::process::Command;

use pyexec_store::testing::TempPostgres;
use pyexec_store::{open, KeyLimits, StoreError};

async fn open_with(dir: &std::path::Path, url: String) -> Result<(), StoreError> {
    let config = common::config(dir, Some(url));
    let store = open(config).await?;
    store.create_key("over tls", &KeyLimits::default()).await?;
    Ok(())
}

/// A CA that signed nothing of this cluster's.
fn other_ca(dir: &std::path::Path) -> std::path::PathBuf {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=some other CA"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    dir.join("other.pem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_server_that_requires_tls() {
    let pg = tokio::task::spawn_blocking(TempPostgres::start_with_tls)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = pg.ca_file().unwrap();
    let base = pg.url();
    let localhost = base.replace("127.0.0.1", "localhost");
    let key_value = |host: &str, mode: &str, root: &str| {
        format!(
            "hostaddr=127.0.0.1 host={host} port={} user=pyexec password={} dbname=pyexec \
             sslmode={mode} {root}",
            pg.port(),
            pg.password()
        )
    };
    let with_ca = format!("sslrootcert={}", ca.display());
    let wrong_ca = format!("sslrootcert={}", other_ca(dir.path()).display());

    let accepted = [
        // Encrypted, certificate unchecked (libpq's meanings).
        format!("{base}?sslmode=require"),
        format!("{base}?sslmode=prefer"),
        base.clone(),
        // The chain checked, and the host name (an IP and a DNS name).
        format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display()),
        format!(
            "{localhost}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ),
        // require with a CA checks the chain, as in libpq.
        format!("{base}?sslmode=require&sslrootcert={}", ca.display()),
        // verify-ca: any name, as long as the chain leads to the CA.
        key_value("not-the-name.example", "verify-ca", &with_ca),
    ];
    for url in accepted {
        eprintln!("accepted? {url}");
        open_with(dir.path(), url.clone())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    let refused = [
        // Plain text: the server's pg_hba rejects it.
        (format!("{base}?sslmode=disable"), "no encryption"),
        // No trusted CA: the system's roots don't know this one.
        (format!("{base}?sslmode=verify-full"), "certificate"),
        (
            key_value("localhost", "verify-ca", &wrong_ca),
            "certificate",
        ),
        (key_value("localhost", "require", &wrong_ca), "certificate"),
        // The right CA, the wrong name.
        (
            key_value("not-the-name.example", "verify-full", &with_ca),
            "certificate",
        ),
    ];
    for (url, saying) in refused {
        match open_with(dir.path(), url.clone()).await {
            Err(StoreError::Unavailable(why)) => {
                eprintln!("refused: {why}");
                assert!(why.contains(saying), "{url}: {why}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    let missing = format!("{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    assert!(matches!(
        open_with(dir.path(), missing).await,
        Err(StoreError::Invalid(_))
    ));
}
