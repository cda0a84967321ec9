//! The playground: its serving over HTTP (headers, encodings, caching, route
//! labels) on the in-process server, and the page itself in a real Chromium
//! (`web/tests/playground.mjs`, run by node) against the real binary and
//! sandbox: without keys (with snippets shared by link), and with keys on
//! (no key, a wrong one, a good one made by `pyexec keys create`).

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::store::TestStore;
use common::{get, repo_root, request, InProcessServer, TestServer};

/// The page's Content-Security-Policy, as the browser test also expects it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The `/assets/...` paths the page names.
fn assets_named_by(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .map(|rest| {
            format!(
                "/assets/{}",
                &rest[..rest.find('"').expect("a closing quote")]
            )
        })
        .collect()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "gzip -dc failed");
    output.stdout
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_their_headers() {
    let server = InProcessServer::start(&[]).await;
    let addr = server.addr;

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("content-encoding"), None);
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("vary"), Some("Accept-Encoding"));
    let html = page.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");

    // Every playground answer carries the security headers.
    let assets = assets_named_by(&html);
    assert!(
        assets.len() >= 3,
        "script, style sheet and icon: {assets:?}"
    );
    for path in ["/", "/s/AbC-12_x"]
        .into_iter()
        .chain(assets.iter().map(String::as_str))
    {
        let response = get(addr, path).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.header("content-security-policy"),
            Some(CSP),
            "{path}"
        );
        assert_eq!(
            response.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            response.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert!(response.header("etag").is_some(), "{path}");
    }
    assert_eq!(
        get(addr, "/s/AbC-12_x").await.body,
        page.body,
        "/s/{{id}} is the page"
    );

    // The gzip copy is the same bytes; its ETag differs from the plain one's.
    let gzip = [("Accept-Encoding", "gzip")];
    for path in std::iter::once("/").chain(assets.iter().map(String::as_str)) {
        let plain = get(addr, path).await;
        let zipped = request(addr, "GET", path, &gzip, b"").await;
        assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(zipped.header("vary"), Some("Accept-Encoding"), "{path}");
        assert_eq!(gunzip(&zipped.body), plain.body, "{path}");
        assert!(zipped.body.len() < plain.body.len(), "{path}");
        assert_ne!(zipped.header("etag"), plain.header("etag"), "{path}");
        let brotli = request(addr, "GET", path, &[("Accept-Encoding", "gzip, br")], b"").await;
        assert_eq!(brotli.header("content-encoding"), Some("br"), "{path}");
        if path.starts_with("/assets/") {
            assert_eq!(
                plain.header("cache-control"),
                Some("public, max-age=31536000, immutable"),
                "{path}"
            );
        }
    }
    let script = assets.iter().find(|a| a.ends_with(".js")).unwrap();
    let js = get(addr, script).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    // A current copy: 304, no body.
    let etag = js.header("etag").unwrap().to_string();
    let again = request(addr, "GET", script, &[("If-None-Match", &etag)], b"").await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    // HEAD: the headers, no body.
    let head = request(addr, "HEAD", "/", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(page.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());

    // What is not there, or not allowed.
    let missing = get(addr, "/assets/app.0000000000000000.js").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["kind"], "not_found");
    for path in ["/s/", "/s/a/b", "/assets/", "/index.html"] {
        assert_eq!(get(addr, path).await.status, 404, "{path}");
    }
    let post = request(addr, "POST", "/s/abc", &[], b"").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // Route labels stay templates, whatever the ids and file names. Read
    // from the text: prometheus-parse 0.2 drops samples whose label values
    // hold braces (Prometheus itself reads them).
    let metrics = get(addr, "/metrics").await.text();
    let routes: Vec<String> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("pyexec_http_requests_total{route=\""))
        .filter_map(|rest| rest.split_once('"').map(|(route, _)| route.to_string()))
        .collect();
    for template in ["/", "/s/{id}", "/assets/{file}"] {
        assert!(
            routes.iter().any(|r| r == template),
            "{template}: {routes:?}"
        );
    }
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("AbC") && !r.contains(".js")),
        "{routes:?}"
    );
    server.shutdown().await;
}

/// Runs the browser test against `server` with `flags`; fails with its
/// output (which is printed as it runs: the figures and the cases).
async fn browser_test(server: &TestServer, flags: &[String]) {
    let root = repo_root();
    let script = root.join("web/tests/playground.mjs");
    assert!(
        root.join("web/node_modules/playwright-core").is_dir(),
        "web/node_modules is missing: run `make web` (npm ci in web/)"
    );
    let out: PathBuf = root.join("target/playground");
    let status = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .args(flags)
        .arg(format!("--out={}", out.display()))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("node could not start ({e}): run `make setup`"));
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above"
    );
}

/// The browser cases run one job after another; a worker's replacement that
/// takes long on a busy machine (spawn mode) must not turn one into a 503.
const SERVER_ENV: &[(&str, &str)] = &[("PYEXEC_QUEUE_TIMEOUT", "30")];

#[tokio::test]
async fn the_playground_in_chromium() {
    let server = TestServer::start(SERVER_ENV).await;
    let mut flags = vec!["--snippets".to_string()];
    // `make screenshot` asks for the docs' screenshot.
    if let Ok(path) = std::env::var("PYEXEC_PLAYGROUND_SCREENSHOT") {
        flags.push(format!("--screenshot={path}"));
    }
    browser_test(&server, &flags).await;
}

#[tokio::test]
async fn the_playground_with_keys_on() {
    let store = TestStore::new();
    let (_, token) = store.new_key("playground", &[]);
    let store_env = store.env();
    let mut env: Vec<(&str, &str)> = vec![("PYEXEC_AUTH", "keys")];
    env.extend(store_env.iter().map(|(n, v)| (*n, v.as_str())));
    env.extend_from_slice(SERVER_ENV);
    let server = TestServer::start(&env).await;
    browser_test(
        &server,
        &[
            "--keys".to_string(),
            "--snippets".to_string(),
            format!("--valid-key={token}"),
        ],
    )
    .await;
}
