//! matplotlib end to end, on the real binary and the real jail: the figures
//! a script leaves open come back as PNG files with their `content_type`,
//! beside the files it wrote, and plotting never builds or writes a font
//! cache. Run in the isolation mode of `PYEXEC_TEST_ISOLATION` (fork by
//! default).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use serde_json::{json, Value};

use common::{execute, expect, post_execute, Response, TestServer};

async fn post(server: &TestServer, body: &Value) -> Response {
    post_execute(server.addr, body).await
}

/// Decodes a file entry's base64 PNG with Pillow (in the sandbox venv) and
/// returns its "width x height mode", so "is a PNG" means a decoder read
/// every pixel, not only that the magic bytes are there.
fn decode_png(file: &Value) -> String {
    let mut python = Command::new("/opt/pyexec/sandbox-venv/bin/python3")
        .args([
            "-I",
            "-c",
            "import base64, io, sys\nfrom PIL import Image\n\
             image = Image.open(io.BytesIO(base64.b64decode(sys.stdin.read())))\n\
             assert image.format == 'PNG', image.format\nimage.load()\n\
             print(f'{image.width}x{image.height} {image.mode}')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sandbox venv's python runs");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(file["content_base64"].as_str().unwrap().as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} does not decode as a PNG: {}",
        file["name"],
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn names(body: &Value) -> Vec<&str> {
    body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_plot_comes_back_as_figure_1_png() {
    let server = TestServer::start(&[]).await;
    let answer = post(
        &server,
        &json!({"script": "import matplotlib.pyplot as plt\ndef main():\n    plt.plot([1,2,3])\n    return {}"}),
    )
    .await;
    let body = expect(&answer, 200, "");
    assert_eq!(names(&body), ["figure-1.png"], "{body}");
    let figure = &body["files"][0];
    assert_eq!(figure["content_type"], "image/png");
    assert_eq!(figure["media_type"], "image/png");
    assert_eq!(decode_png(figure), "640x480 RGBA");
    assert_eq!((&body["stdout"], &body["stderr"]), (&json!(""), &json!("")));
}

#[tokio::test]
async fn figures_keep_to_creation_order_the_scripts_names_and_the_caps() {
    let server = TestServer::start(&[("PYEXEC_MAX_OUTPUT_FILES", "4")]).await;
    let script = r#"
import json
import matplotlib.pyplot as plt
def main():
    open('/tmp/outputs/figure-1.png', 'w').write('mine')
    open('/tmp/outputs/data.json', 'w').write(json.dumps({'a': [1, 2]}))
    plt.figure()
    plt.plot(range(1000))
    plt.savefig('/tmp/outputs/line.svg')
    plt.figure(figsize=(2, 1))
    plt.bar(['a', 'b'], [3, 4])
    plt.figure()
    plt.show()
    return {}
"#;
    let body = expect(&post(&server, &json!({"script": script})).await, 200, "");
    // Four of the five fit the cap: the script's three files come first by
    // name, then the first figure; the last one is omitted, not an error.
    assert_eq!(
        names(&body),
        ["data.json", "figure-1.png", "figure-2.png", "figure-3.png"],
        "{body}"
    );
    let types: Vec<&str> = body["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["content_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["application/json", "text/plain", "image/png", "image/png"]
    );
    assert_eq!(body["files_omitted"], json!(["figure-4.png", "line.svg"]));
    assert_eq!(body["files_truncated"], true);
    // Creation order: the line plot (figure-2) is 640x480, the bar chart 200x100.
    assert_eq!(decode_png(&body["files"][2]), "640x480 RGBA");
    assert_eq!(decode_png(&body["files"][3]), "200x100 RGBA");
    assert_eq!((&body["stdout"], &body["stderr"]), (&json!(""), &json!("")));

    let svg = "import matplotlib.pyplot as plt\ndef main():\n    plt.plot([1, 2])\n    plt.savefig('/tmp/outputs/line.svg')\n    plt.close()\n    return {}\n";
    let body = expect(&execute(server.addr, svg).await, 200, "");
    assert_eq!(names(&body), ["line.svg"]);
    assert_eq!(body["files"][0]["content_type"], "image/svg+xml");
}

#[tokio::test]
async fn a_figure_that_fails_to_save_is_reported_in_stderr() {
    let server = TestServer::start(&[]).await;
    let script = "import matplotlib.pyplot as plt\ndef main():\n    plt.figure(dpi=2_000_000).gca().plot([1, 2])\n    plt.figure().gca().plot([2, 1])\n    return {'ok': True}\n";
    let body = expect(&execute(server.addr, script).await, 200, "");
    assert_eq!(body["result"], json!({"ok": true}));
    assert_eq!(names(&body), ["figure-2.png"]);
    let stderr = body["stderr"].as_str().unwrap();
    assert!(
        stderr.starts_with("pyexec: figure-1.png could not be saved: ValueError: Image size"),
        "{stderr}"
    );
}

/// The font list python/build_font_cache.py wrote at install time.
fn font_list() -> std::path::PathBuf {
    let dir = std::path::Path::new("/opt/pyexec/sandbox-venv/share/pyexec-matplotlib");
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", dir.display()))
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with(".json"))
        .expect("a fontlist-*.json")
}

#[tokio::test]
async fn plotting_neither_reads_nor_writes_a_font_cache() {
    let list = font_list();
    let before: SystemTime = std::fs::metadata(&list).unwrap().modified().unwrap();
    let server = TestServer::start(&[]).await;
    // An audit hook sees every file the plot opens. The font list is read
    // from the install-time copy (fork mode: at warm-up; spawn mode: at the
    // script's import, before the hook), never built or written.
    let script = format!(
        r#"
import os, sys
import matplotlib, matplotlib.pyplot as plt
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == 'open' else None)
def main():
    plt.plot(range(1000))
    plt.title('no cache')
    plt.savefig('/tmp/outputs/plot.png')
    plt.show()
    plt.close('all')
    seen = sorted(set(opened))
    try:
        open({list:?}, 'a')
        written = 'written'
    except OSError as e:
        written = e.strerror
    return {{'opened': seen, 'tmp': sorted(os.listdir('/tmp')),
             'cachedir': matplotlib.get_cachedir(), 'written': written}}
"#,
        list = list.to_string_lossy()
    );
    let body = expect(&execute(server.addr, &script).await, 200, "");
    let result = &body["result"];
    let opened: Vec<&str> = result["opened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        opened
            .iter()
            .all(|p| !p.contains("fontlist") && !p.starts_with("/tmp/matplotlib")),
        "{opened:?}"
    );
    assert!(opened.contains(&"/tmp/outputs/plot.png"), "{opened:?}");
    assert_eq!(result["tmp"], json!(["outputs"]), "nothing else in /tmp");
    assert_eq!(result["cachedir"], "/tmp");
    let written = result["written"].as_str().unwrap();
    assert!(
        ["Permission denied", "Read-only file system"].contains(&written),
        "the font list is not writable from a job: {written}"
    );
    assert_eq!((&body["stdout"], &body["stderr"]), (&json!(""), &json!("")));
    let after = std::fs::metadata(&list).unwrap().modified().unwrap();
    assert_eq!(before, after, "the font list was not touched");
}
