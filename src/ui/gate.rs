//! The CSRF rules for browser requests under `/ui/api/`: the one place
//! where requests from a web page (with `Origin` or `Referer`) are
//! accepted. Pure functions of the request's headers, so that the daemon
//! and `licagent ui` apply the same rules and unit tests pin them.
//!
//! Why these rules stop a cross-site request (docs/ui.md):
//! - A change must carry `X-Licagent-UI: 1`. A form or an `<img>` cannot
//!   send a custom header, and `fetch` from another origin can only send
//!   it after a CORS preflight, which is never approved (no
//!   `Access-Control-Allow-*` header is ever sent).
//! - When the browser says where the request comes from (`Origin`), it
//!   must be the page's own origin: the `Host` the request was sent to.
//! - When the browser says how the request relates to the page
//!   (`Sec-Fetch-Site`), it must be `same-origin` (or `none`: typed into
//!   the address bar).

use hyper::header::HeaderMap;

/// The header every change through `/ui/api/` carries.
pub const UI_HEADER: &str = "x-licagent-ui";

/// Why a request through `/ui/api/` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` is not the request's own origin, or `Sec-Fetch-Site`
    /// says another site: the API code `origin_refused`.
    CrossOrigin(String),
    /// A change without `X-Licagent-UI: 1`: the API code `csrf_refused`.
    MissingHeader,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::CrossOrigin(why) => write!(f, "refused a request from another site: {why}"),
            Refusal::MissingHeader => f.write_str(
                "a change through the page's API needs the header X-Licagent-UI: 1 (the page sends it; a form on another site cannot)",
            ),
        }
    }
}

/// Checks one request to `/ui/api/`; `change` is true for every method
/// but GET and HEAD.
pub fn check(headers: &HeaderMap, change: bool) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Err(Refusal::CrossOrigin(format!(
                "the browser says the request comes from a {site:?} page (Sec-Fetch-Site), not from this page"
            )));
        }
    }
    if let Some(origin) = headers.get("origin") {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !same_origin(origin, host) {
            return Err(Refusal::CrossOrigin(format!(
                "Origin {origin:?} is not this page's origin (Host {host:?}); a proxy in front must pass the Host header on"
            )));
        }
    }
    if change {
        let marked = headers.get(UI_HEADER).is_some_and(|v| v.as_bytes() == b"1");
        if !marked {
            return Err(Refusal::MissingHeader);
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`, as browsers send it) names
/// the authority `host` (`host[:port]`, the Host header). Default ports
/// may be left out on either side; names compare case-insensitively.
/// `null` (a sandboxed or file page) never matches.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    if authority.is_empty() || authority.contains('/') || host.is_empty() {
        return false;
    }
    let norm = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        // "[::1]:8080", "[::1]", "host:8080", "host"
        let has_port = match a.rfind(':') {
            Some(i) => !a[i..].contains(']'),
            None => false,
        };
        if has_port {
            a
        } else {
            format!("{a}:{default_port}")
        }
    };
    norm(authority) == norm(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_pages_own_requests_pass() {
        let h = headers(&[
            ("host", "pbx.example:8443"),
            ("origin", "https://pbx.example:8443"),
            ("sec-fetch-site", "same-origin"),
            ("x-licagent-ui", "1"),
        ]);
        assert_eq!(check(&h, true), Ok(()));
        // A GET from the page without the header (EventSource cannot set one).
        let h = headers(&[("host", "pbx.example"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(check(&h, false), Ok(()));
    }

    #[test]
    fn an_origin_of_another_host_or_port_is_refused() {
        for origin in [
            "https://evil.example",
            "https://pbx.example:444",
            "http://pbx.example.evil.example",
            "null",
            "pbx.example",
        ] {
            let mut h = headers(&[("host", "pbx.example"), ("x-licagent-ui", "1")]);
            h.insert("origin", HeaderValue::from_str(origin).unwrap());
            assert!(
                matches!(check(&h, true), Err(Refusal::CrossOrigin(_))),
                "{origin}"
            );
            assert!(
                matches!(check(&h, false), Err(Refusal::CrossOrigin(_))),
                "{origin}"
            );
        }
    }

    #[test]
    fn a_change_without_the_ui_header_is_refused() {
        let h = headers(&[("host", "pbx.example"), ("origin", "https://pbx.example")]);
        assert_eq!(check(&h, true), Err(Refusal::MissingHeader));
        let h = headers(&[
            ("host", "pbx.example"),
            ("origin", "https://pbx.example"),
            ("x-licagent-ui", "yes"),
        ]);
        assert_eq!(check(&h, true), Err(Refusal::MissingHeader));
    }

    #[test]
    fn sec_fetch_site_of_another_site_is_refused() {
        for site in ["cross-site", "same-site"] {
            let mut h = headers(&[("host", "pbx.example"), ("x-licagent-ui", "1")]);
            h.insert("sec-fetch-site", HeaderValue::from_str(site).unwrap());
            assert!(matches!(check(&h, false), Err(Refusal::CrossOrigin(_))));
        }
        let h = headers(&[("host", "pbx.example"), ("sec-fetch-site", "none")]);
        assert_eq!(check(&h, false), Ok(()));
    }

    #[test]
    fn default_ports_and_case_compare_equal() {
        assert!(same_origin("https://PBX.example", "pbx.example:443"));
        assert!(same_origin("http://pbx.example:80", "pbx.example"));
        assert!(same_origin("http://[::1]:8080", "[::1]:8080"));
        assert!(same_origin("http://127.0.0.1:41000", "127.0.0.1:41000"));
        assert!(!same_origin("http://[::1]", "[::1]:8080"));
        assert!(!same_origin("https://pbx.example", "pbx.example:80"));
        assert!(!same_origin("https://pbx.example", ""));
        assert!(!same_origin("ftp://pbx.example", "pbx.example"));
    }
}
