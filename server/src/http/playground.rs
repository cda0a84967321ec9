//! The playground: the page and its assets, built from `web/` and embedded at
//! compile time (`server/build.rs`), served precompressed with their caching
//! and security headers.
//!
//! ```text
//!  GET /, GET /s/{id}  ─▶ index.html   Cache-Control: no-cache
//!  GET /assets/{file}  ─▶ the file     Cache-Control: public, max-age=31536000, immutable
//!  every answer: the CSP below, nosniff, no-referrer, Vary: Accept-Encoding, an ETag per encoding;
//!  brotli or gzip when the client accepts it, else the plain bytes; If-None-Match ─▶ 304
//! ```

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY, VARY,
    X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};

use super::error::ApiError;
use super::Body;

/// One embedded file and its precompressed copies (absent where compressing
/// did not make it smaller).
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    /// Of the plain bytes; also in the file name of every asset but the page.
    pub hash: &'static str,
    pub identity: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub brotli: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/playground_assets.rs"));

/// Nothing from another origin, no inline script or style (the editor's
/// styles go through constructed style sheets, which CSP does not govern),
/// images also from the blob: URLs the page makes of a job's files, and the
/// page can't be framed.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

const PAGE_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=31536000, immutable";

/// `GET /` and `GET /s/{id}`: the page (it loads the snippet itself).
pub fn page(request: &HeaderMap) -> Response<Body> {
    respond(&PAGE, PAGE_CACHE, request)
}

/// `GET /assets/{file}`.
pub fn asset(file: &str, request: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == file)
        .ok_or_else(|| ApiError::not_found(&format!("/assets/{file}")))?;
    Ok(respond(asset, ASSET_CACHE, request))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Brotli,
}

impl Encoding {
    fn token(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Brotli => Some("br"),
        }
    }
}

fn respond(asset: &Asset, cache: &'static str, request: &HeaderMap) -> Response<Body> {
    let (encoding, bytes) = match (asset.brotli, asset.gzip) {
        (Some(bytes), _) if accepts(request, "br") => (Encoding::Brotli, bytes),
        (_, Some(bytes)) if accepts(request, "gzip") => (Encoding::Gzip, bytes),
        _ => (Encoding::Identity, asset.identity),
    };
    let etag = match encoding.token() {
        Some(token) => format!("\"{}-{token}\"", asset.hash),
        None => format!("\"{}\"", asset.hash),
    };
    let fresh = request
        .get_all(IF_NONE_MATCH)
        .iter()
        .any(|value| matches_etag(value, &etag));
    let mut response = if fresh {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        Response::new(Full::new(Bytes::from_static(bytes)))
    };
    let headers = response.headers_mut();
    security_headers(headers);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    if !fresh {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        if let Some(token) = encoding.token() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(token));
        }
    }
    response
}

fn security_headers(headers: &mut HeaderMap) {
    let fixed: [(HeaderName, &'static str); 3] = [
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// Whether the request's Accept-Encoding headers accept `coding`: named with
/// a q-value above 0 (`x-gzip` counts as `gzip`), or not named while `*` is.
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    let mut named = None;
    let mut any = None;
    for value in request.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let acceptable = quality > 0.0;
            if name.eq_ignore_ascii_case(coding)
                || (coding == "gzip" && name.eq_ignore_ascii_case("x-gzip"))
            {
                named = Some(named.unwrap_or(false) || acceptable);
            } else if name == "*" {
                any = Some(acceptable);
            }
        }
    }
    named.or(any).unwrap_or(false)
}

/// Whether an If-None-Match value names `etag` (weak comparison, as RFC 9110
/// asks for If-None-Match) or is `*`.
fn matches_etag(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn accept(value: &str) -> HeaderMap {
        headers(&[(ACCEPT_ENCODING, value)])
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let chromium = accept("gzip, deflate, br, zstd");
        assert!(accepts(&chromium, "br") && accepts(&chromium, "gzip"));
        assert!(!accepts(&accept("gzip;q=0, br"), "gzip"));
        assert!(accepts(&accept("gzip;q=0, br"), "br"));
        assert!(accepts(&accept("GZIP ; q=0.5"), "gzip"));
        assert!(accepts(&accept("x-gzip"), "gzip"));
        assert!(accepts(&accept("*"), "br"));
        assert!(!accepts(&accept("*, br;q=0"), "br"));
        assert!(!accepts(&accept("*;q=0"), "gzip"));
        assert!(!accepts(&accept("identity"), "gzip"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
        assert!(accepts(
            &headers(&[(ACCEPT_ENCODING, "deflate"), (ACCEPT_ENCODING, "gzip")]),
            "gzip"
        ));
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let etag = "\"abc-gzip\"";
        let value = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(matches_etag(&value("\"abc-gzip\""), etag));
        assert!(matches_etag(&value("W/\"abc-gzip\""), etag));
        assert!(matches_etag(&value("\"x\", \"abc-gzip\""), etag));
        assert!(matches_etag(&value("*"), etag));
        assert!(!matches_etag(&value("\"abc\""), etag));
        assert!(!matches_etag(&value("\"abc-br\""), etag));
    }

    #[test]
    fn the_encoding_follows_the_client_and_the_etag_follows_the_encoding() {
        let plain = page(&HeaderMap::new());
        assert_eq!(plain.headers().get(CONTENT_ENCODING), None);
        assert_eq!(plain.headers()[ETAG], format!("\"{}\"", PAGE.hash).as_str());
        let gzip = page(&accept("gzip"));
        assert_eq!(gzip.headers()[CONTENT_ENCODING], "gzip");
        assert_eq!(
            gzip.headers()[ETAG],
            format!("\"{}-gzip\"", PAGE.hash).as_str()
        );
        let brotli = page(&accept("gzip, br"));
        assert_eq!(brotli.headers()[CONTENT_ENCODING], "br");
        for response in [&plain, &gzip, &brotli] {
            assert_eq!(response.headers()[VARY], "Accept-Encoding");
            assert_eq!(response.headers()[CACHE_CONTROL], "no-cache");
            assert_eq!(response.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        }
    }

    #[test]
    fn a_current_copy_gets_304_with_the_same_headers_and_no_body() {
        let first = page(&accept("gzip"));
        let etag = first.headers()[ETAG].to_str().unwrap().to_string();
        let again = page(&headers(&[
            (ACCEPT_ENCODING, "gzip"),
            (IF_NONE_MATCH, etag.as_str()),
        ]));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[ETAG], etag.as_str());
        assert_eq!(
            again.headers()[CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY_VALUE
        );
        // The gzip copy's tag does not stand for the plain bytes.
        let plain = page(&headers(&[(IF_NONE_MATCH, etag.as_str())]));
        assert_eq!(plain.status(), StatusCode::OK);
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_immutable_caching() {
        assert!(!ASSETS.is_empty());
        for asset in ASSETS {
            assert!(asset.name.contains(asset.hash), "{}", asset.name);
            let response = super::asset(asset.name, &HeaderMap::new()).unwrap();
            assert_eq!(response.headers()[CONTENT_TYPE], asset.content_type);
            assert_eq!(response.headers()[CACHE_CONTROL], ASSET_CACHE);
            assert_eq!(response.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(response.headers()[REFERRER_POLICY], "no-referrer");
        }
        let missing = super::asset("app.js", &HeaderMap::new()).unwrap_err();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_page_names_only_assets_that_exist() {
        let html = std::str::from_utf8(PAGE.identity).unwrap();
        let mut named = 0;
        for piece in html.split("\"/assets/").skip(1) {
            let file = &piece[..piece.find('"').unwrap()];
            assert!(ASSETS.iter().any(|a| a.name == file), "{file}");
            named += 1;
        }
        assert!(named >= 2, "the page names its script and style sheet");
        assert!(!html.contains("<script>") && !html.contains("style="));
    }
}
