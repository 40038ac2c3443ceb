//! The "Activation / Licenses" page (docs/ui.md): plain HTML, CSS and
//! JavaScript embedded in the binary, served under `/ui/` by the daemon on
//! its socket (for a PBX's web server to reverse-proxy) and by
//! `licagent ui` on loopback TCP. The page calls the API through
//! `/ui/api/v1/...`, the one place where browser requests are accepted,
//! under the CSRF rules of [`gate`].

pub mod gate;
pub mod serve;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode, Uri};

use crate::api::error::{ApiError, Code, ErrorBody};

/// The page's files: name under `/ui/`, content type, bytes.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

/// The page may load only its own files and talk only to its own origin;
/// it may be framed only by its own origin (the PBX's admin that proxies
/// it), never by another site (clickjacking).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'self'; base-uri 'none'";

/// The prefix of the page's API calls.
pub const API_PREFIX: &str = "/ui/api/";

/// What the daemon does with a request on its socket.
pub enum Gate<B> {
    /// Not under `/ui/`: the API's own rules apply (`Origin` refused).
    NotUi(Request<B>),
    /// A call of the page that passed the CSRF rules, rewritten to its
    /// `/v1/...` path with `Origin` and `Referer` removed.
    Api(Request<B>),
    /// A file of the page, or a refusal.
    Answer(Response<Full<Bytes>>),
}

/// Sorts one request on the daemon's socket (the route hook of
/// `api::server`).
pub fn gate<B>(mut req: Request<B>) -> Gate<B> {
    let path = req.uri().path();
    if path != "/ui" && !path.starts_with("/ui/") {
        return Gate::NotUi(req);
    }
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        let name = path.strip_prefix("/ui/").unwrap_or("/ui").to_string();
        return Gate::Answer(asset(req.method(), &name));
    };
    let change = req.method() != Method::GET && req.method() != Method::HEAD;
    if let Err(refusal) = gate::check(req.headers(), change) {
        tracing::warn!(method = %req.method(), path = %path, "{refusal}");
        return Gate::Answer(refused(&refusal));
    }
    let target = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    match target.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            return Gate::Answer(error(
                StatusCode::BAD_REQUEST,
                Code::BadRequest,
                "the path is not valid",
            ))
        }
    }
    req.headers_mut().remove("origin");
    req.headers_mut().remove("referer");
    Gate::Api(req)
}

/// The answer to a refused `/ui/api/` request: 403 with the API's codes.
pub fn refused(refusal: &gate::Refusal) -> Response<Full<Bytes>> {
    let code = match refusal {
        gate::Refusal::CrossOrigin(_) => Code::OriginRefused,
        gate::Refusal::MissingHeader => Code::CsrfRefused,
    };
    error(StatusCode::FORBIDDEN, code, &refusal.to_string())
}

/// One of the page's files (`name` is the path under `/ui/`), or 404/405.
pub fn asset(method: &Method, name: &str) -> Response<Full<Bytes>> {
    let Some((_, ctype, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            &format!("the page has no file {name:?} (open /ui/ with its slash)"),
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::MethodNotAllowed,
            &format!("{method} is not allowed on the page's files"),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    };
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    // The files change with the binary; a browser asks again each time
    // (they are small and come from the same box).
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    page_headers(h);
    resp
}

/// Headers of every answer that a browser renders.
pub fn page_headers(h: &mut hyper::HeaderMap) {
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    h.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("SAMEORIGIN"),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
}

/// An error in the API's shape: `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: Code, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&ErrorBody {
        error: ApiError::new(code, message),
    })
    .unwrap_or_default();
    json_response(status, body)
}

/// A JSON answer with the given body.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Total size of the page's files, for docs and tests.
pub fn assets_size() -> usize {
    ASSETS.iter().map(|(_, _, b)| b.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn other_paths_keep_the_apis_rules() {
        assert!(matches!(
            gate(req("GET", "/v1/status", &[("origin", "http://x")])),
            Gate::NotUi(_)
        ));
        assert!(matches!(gate(req("GET", "/uix/", &[])), Gate::NotUi(_)));
    }

    #[test]
    fn page_calls_are_rewritten_to_v1_without_origin() {
        let r = req(
            "GET",
            "/ui/api/v1/users?licensed=false",
            &[("host", "pbx"), ("origin", "https://pbx")],
        );
        let Gate::Api(r) = gate(r) else {
            panic!("not passed")
        };
        assert_eq!(r.uri().path(), "/v1/users");
        assert_eq!(r.uri().query(), Some("licensed=false"));
        assert!(r.headers().get("origin").is_none());
    }

    #[test]
    fn refusals_carry_the_api_codes() {
        let Gate::Answer(a) = gate(req(
            "POST",
            "/ui/api/v1/refresh",
            &[("host", "pbx"), ("origin", "https://pbx")],
        )) else {
            panic!("passed")
        };
        assert_eq!(a.status(), StatusCode::FORBIDDEN);
        let Gate::Answer(a) = gate(req(
            "GET",
            "/ui/api/v1/status",
            &[("host", "pbx"), ("origin", "https://evil")],
        )) else {
            panic!("passed")
        };
        assert_eq!(a.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_files_are_served_with_their_types_and_small() {
        let a = asset(&Method::GET, "");
        assert_eq!(a.status(), StatusCode::OK);
        assert!(a.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(a.headers().contains_key("content-security-policy"));
        assert_eq!(asset(&Method::GET, "app.js").status(), StatusCode::OK);
        assert_eq!(asset(&Method::GET, "nope").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            asset(&Method::POST, "app.css").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // docs/ui.md promises a page under 40 KiB.
        assert!(assets_size() < 40 * 1024, "{}", assets_size());
    }
}
