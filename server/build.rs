//! Embeds the playground built by `make web` (web/dist, listed by its
//! manifest.json) into the binary: writes `$OUT_DIR/playground_assets.rs`,
//! which `src/http/playground.rs` includes. Without web/dist the build stops
//! and says how to make it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn main() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    let manifest_path = dist.join("manifest.json");
    println!("cargo:rerun-if-changed={}", manifest_path.display());
    let generated = match read_manifest(&dist, &manifest_path) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: the playground is not built: {message}");
            eprintln!("Run `make web` from the repository root (npm ci and the build in web/),");
            eprintln!("or `make build`, which does it first; then build again.");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("playground_assets.rs"), generated)
        .expect("write playground_assets.rs into OUT_DIR");
}

/// The Rust source of `PAGE` and `ASSETS`, from the manifest.
fn read_manifest(dist: &Path, manifest_path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|e| format!("{} cannot be read ({e})", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON ({e})", manifest_path.display()))?;
    let files = manifest["files"]
        .as_object()
        .ok_or("manifest.json has no \"files\" object")?;
    let mut page = None;
    let mut assets = Vec::new();
    for (path, entry) in files {
        let code = asset_literal(dist, path, entry)?;
        if path == "/" {
            page = Some(code);
        } else if path.strip_prefix("/assets/") == entry["file"].as_str() {
            assets.push(code);
        } else {
            return Err(format!(
                "manifest.json: {path:?} is neither \"/\" nor \"/assets/<its file>\""
            ));
        }
    }
    let page = page.ok_or("manifest.json has no \"/\" (the page)")?;
    let mut code = String::from("/// The page: `GET /` and `GET /s/{id}`.\n");
    writeln!(code, "pub static PAGE: Asset = {page};").unwrap();
    code.push_str("/// The files under `/assets/`, named by their content hash.\n");
    code.push_str("pub static ASSETS: &[Asset] = &[\n");
    for asset in assets {
        writeln!(code, "    {asset},").unwrap();
    }
    code.push_str("];\n");
    Ok(code)
}

/// One `Asset { .. }` expression, its bytes `include_bytes!`'d from dist.
fn asset_literal(dist: &Path, path: &str, entry: &Value) -> Result<String, String> {
    let field = |name: &str| {
        entry[name]
            .as_str()
            .ok_or_else(|| format!("manifest.json: {path:?} has no {name:?}"))
    };
    let file = field("file")?;
    let content_type = field("content_type")?;
    let hash = field("hash")?;
    if !is_safe_name(file) {
        return Err(format!("manifest.json: {path:?} names the file {file:?}"));
    }
    if content_type.is_empty() || !content_type.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(format!(
            "manifest.json: {path:?} has the content type {content_type:?}"
        ));
    }
    if hash.is_empty() || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("manifest.json: {path:?} has the hash {hash:?}"));
    }
    let bytes = |name: &str| -> Result<String, String> {
        if !is_safe_name(name) {
            return Err(format!("manifest.json: {path:?} names the file {name:?}"));
        }
        let full = dist.join(name);
        let full = full
            .canonicalize()
            .map_err(|e| format!("{} is missing ({e})", full.display()))?;
        println!("cargo:rerun-if-changed={}", full.display());
        let full = full
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", full.display()))?;
        Ok(format!("include_bytes!({full:?})"))
    };
    let encoded = |key: &str| -> Result<String, String> {
        match entry.get(key).and_then(Value::as_str) {
            Some(name) => Ok(format!("Some({})", bytes(name)?)),
            None => Ok("None".into()),
        }
    };
    Ok(format!(
        "Asset {{ name: {file:?}, content_type: {content_type:?}, hash: {hash:?}, \
         identity: {}, gzip: {}, brotli: {} }}",
        bytes(file)?,
        encoded("gzip")?,
        encoded("br")?,
    ))
}

/// A plain file name in dist: no folder, nothing hidden.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}
