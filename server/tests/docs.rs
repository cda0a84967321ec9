//! The README and docs/ hold what a newcomer reads first: every relative
//! link and anchor in them resolves, the README's status table names every
//! error kind with the status the server answers, and the README stays
//! short enough to be read (the rest belongs in docs/).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pyexec_server::http::error::ApiError;
use pyexec_server::kind::Kind;

mod common;

/// The README's size cap, in bytes.
const README_MAX_BYTES: usize = 15 * 1024;

/// README.md and every Markdown file of docs/.
fn documents() -> Vec<PathBuf> {
    let root = common::repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no Markdown file in docs/");
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .collect()
}

/// `line` without its inline code spans.
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The anchors GitHub gives the headings of `text`: lower case, letters,
/// digits, `-` and `_` kept, spaces made `-`, the rest dropped; a repeated
/// anchor gets `-1`, `-2`, ….
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let title = heading.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.push(match *count {
            0 => slug.clone(),
            n => format!("{slug}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// The targets of the Markdown links `[text](target)` in `text`'s prose.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    targets
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let dir = document.parent().unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file: PathBuf = if path.is_empty() {
                document.clone()
            } else {
                dir.join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", name(&document)));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let target_text = std::fs::read_to_string(&file).unwrap_or_default();
            if !anchors(&target_text).iter().any(|a| a == anchor) {
                broken.push(format!(
                    "{}: {target}: no heading with that anchor in {}",
                    name(&document),
                    name(&file)
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

fn name(path: &Path) -> String {
    path.strip_prefix(common::repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn the_anchors_are_githubs() {
    let text = "# What `main()` may return\n## cgroup v2: the VM stage\n\
                ```sh\n# not a heading\n```\n## Fork mode's extra exposure\n## Errors\n## Errors\n";
    assert_eq!(
        anchors(text),
        [
            "what-main-may-return",
            "cgroup-v2-the-vm-stage",
            "fork-modes-extra-exposure",
            "errors",
            "errors-1"
        ]
    );
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and `[b](c)` and [d](https://e)"),
        ["docs/a.md#x", "https://e"]
    );
}

/// The README's status table: every kind, each with the status
/// `ApiError::status` gives it, and nothing else.
#[test]
fn the_readme_status_table_names_every_kind_with_its_status() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|line| line.trim() != "| case | status | kind |")
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    let mut listed: Vec<(String, u16)> = Vec::new();
    for row in &rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let [.., status, kind] = cells.as_slice() else {
            panic!("a status row without its cells: {row}");
        };
        let statuses: Vec<u16> = status
            .split(" / ")
            .map(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no status number in {row}"))
            })
            .collect();
        let kinds: Vec<&str> = kind.split(" / ").map(|k| k.trim_matches('`')).collect();
        assert_eq!(statuses.len(), kinds.len(), "{row}");
        for (kind, status) in kinds.into_iter().zip(statuses) {
            listed.push((kind.to_string(), status));
        }
    }
    for kind in Kind::ALL {
        let status = ApiError::new(kind, "x").status().as_u16();
        assert!(
            listed
                .iter()
                .any(|(name, s)| name == kind.as_str() && *s == status),
            "the README's status table lacks {} → {status}",
            kind.as_str()
        );
    }
    for (name, status) in &listed {
        assert!(
            Kind::ALL.iter().any(|k| k.as_str() == name),
            "the README's status table names {name} ({status}), which is no kind"
        );
    }
}

#[test]
fn the_readme_stays_short() {
    let size = std::fs::metadata(common::repo_root().join("README.md"))
        .unwrap()
        .len() as usize;
    assert!(
        size <= README_MAX_BYTES,
        "README.md is {size} bytes, over {README_MAX_BYTES}: move detail into docs/"
    );
}
