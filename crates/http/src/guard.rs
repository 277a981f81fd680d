//! The guard in front of every local HTTP API: only requests addressed to the
//! address the API is bound to, and nothing another web page can send.
//!
//! A browser lets any page send "simple" requests anywhere (a `POST` with no
//! body or a `text/plain` one, no preflight), and a page whose name is made to
//! resolve to 127.0.0.1 (DNS rebinding) is even same-origin with the API. So:
//! - the `Host` must name the bound address: that IP (or `localhost` for a
//!   loopback one) and port. Bound to every address (`0.0.0.0`, in a container
//!   behind a port mapping), any IP literal or `localhost` on any port; never a
//!   DNS name, which is what rebinding needs.
//! - a request that changes something (any method but `GET`, `HEAD`, `OPTIONS`)
//!   is refused when it says it comes from another page (`Origin` other than
//!   the API's own, `Sec-Fetch-Site` other than `same-origin` or `none`), and when
//!   its body is anything but JSON (a form or `text/plain` is what a page can
//!   send without asking).
//!
//! curl, scripts and octopoll's own clients send no `Origin` and JSON bodies, and
//! are not affected; neither is the dashboard, which is the API's own origin.
//!
//! ```
//! use axum::http::{HeaderMap, HeaderValue, Method};
//! use octopoll_http::guard::{check, Refusal};
//!
//! let bound = "127.0.0.1:8080".parse().unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
//! assert_eq!(check(bound, &Method::POST, &headers), Ok(()));
//! headers.insert("origin", HeaderValue::from_static("http://evil.example"));
//! assert!(matches!(check(bound, &Method::POST, &headers), Err(Refusal::ForeignOrigin(_))));
//! ```

use std::net::{IpAddr, SocketAddr};

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::Router;

/// Why the guard refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Host` (HTTP/1.1 requires one).
    #[error("no Host header")]
    NoHost,
    /// Addressed to a name or address this API is not bound to (DNS rebinding).
    #[error("Host {0:?} is not this API's address; use its IP address")]
    ForeignHost(String),
    /// Sent by another web page.
    #[error("refused a request from another web page (Origin {0})")]
    ForeignOrigin(String),
    /// The browser says it comes from another site.
    #[error("refused a cross-site request (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    /// A body that is not JSON, as a page can send without asking.
    #[error("a request that changes something takes a JSON body (Content-Type: application/json), not {0:?}")]
    NotJson(String),
}

impl Refusal {
    /// The status the API answers.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::FORBIDDEN,
        }
    }
}

/// `router` behind the guard, for an API bound to `bound`.
pub fn local_only(router: Router, bound: SocketAddr) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| async move {
            // HTTP/2 names the host in the `:authority`, which arrives in the URI.
            let authority = request.uri().authority().map(|a| a.as_str().to_owned());
            let host = match request.headers().get(header::HOST) {
                Some(host) => Some(String::from_utf8_lossy(host.as_bytes()).into_owned()),
                None => authority,
            };
            match check_host(bound, request.method(), host.as_deref(), request.headers()) {
                Ok(()) => next.run(request).await,
                Err(refusal) => {
                    tracing::debug!(%bound, %refusal, "local API refused a request");
                    crate::error(refusal.status(), refusal.to_string())
                }
            }
        },
    ))
}

/// Whether a request with `method` and `headers` may reach an API bound to `bound`.
pub fn check(bound: SocketAddr, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    check_host(bound, method, host.as_deref(), headers)
}

/// [`check`] with the host named apart from the headers (HTTP/2's `:authority`).
fn check_host(
    bound: SocketAddr,
    method: &Method,
    host: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let host = host.ok_or(Refusal::NoHost)?.to_owned();
    if !host_is_bound(&host, bound) {
        return Err(Refusal::ForeignHost(host));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = text(header::ORIGIN) {
        if origin != format!("http://{host}") {
            return Err(Refusal::ForeignOrigin(origin));
        }
    }
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if site != "same-origin" && site != "none" {
            return Err(Refusal::CrossSite(site));
        }
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || text(header::CONTENT_LENGTH).is_some_and(|n| n.trim() != "0");
    let json = text(header::CONTENT_TYPE).is_some_and(|t| {
        let essence = t.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if has_body && !json {
        return Err(Refusal::NotJson(
            text(header::CONTENT_TYPE).unwrap_or_default(),
        ));
    }
    Ok(())
}

/// Whether `host` (`Host` header: `ip:port`, `[v6]:port`, `localhost:port`)
/// names `bound`.
fn host_is_bound(host: &str, bound: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => {
            (name, port.parse::<u16>().ok())
        }
        _ => (host, Some(80)),
    };
    let Some(port) = port else { return false };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let any = bound.ip().is_unspecified();
    let named = match name.parse::<IpAddr>() {
        Ok(ip) => any || ip == bound.ip(),
        Err(_) => name.eq_ignore_ascii_case("localhost") && (any || bound.ip().is_loopback()),
    };
    named && (any || port == bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const LOOPBACK: &str = "127.0.0.1:8080";

    fn post(bound: &str, pairs: &[(&'static str, &'static str)]) -> Result<(), Refusal> {
        check(bound.parse().unwrap(), &Method::POST, &headers(pairs))
    }

    #[test]
    fn the_host_must_name_the_bound_address() {
        assert_eq!(post(LOOPBACK, &[("host", "127.0.0.1:8080")]), Ok(()));
        assert_eq!(post(LOOPBACK, &[("host", "localhost:8080")]), Ok(()));
        assert_eq!(post(LOOPBACK, &[("host", "LOCALHOST:8080")]), Ok(()));
        for wrong in [
            "rebind.example:8080",
            "127.0.0.2:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "127.0.0.1:x",
        ] {
            assert!(
                matches!(
                    post(LOOPBACK, &[("host", wrong)]),
                    Err(Refusal::ForeignHost(_))
                ),
                "{wrong}"
            );
        }
        assert_eq!(post(LOOPBACK, &[]), Err(Refusal::NoHost));
        // A container's API bound to every address, reached through a port mapping.
        assert_eq!(post("0.0.0.0:8080", &[("host", "127.0.0.1:18081")]), Ok(()));
        assert_eq!(post("0.0.0.0:8080", &[("host", "localhost:18081")]), Ok(()));
        assert!(post("0.0.0.0:8080", &[("host", "node1:8080")]).is_err());
        assert_eq!(post("[::1]:8080", &[("host", "[::1]:8080")]), Ok(()));
        assert_eq!(post("[::1]:8080", &[("host", "localhost:8080")]), Ok(()));
        assert!(post("[::1]:8080", &[("host", "[::2]:8080")]).is_err());
        // Port 80 is implied when the Host has none.
        assert_eq!(post("127.0.0.1:80", &[("host", "127.0.0.1")]), Ok(()));
    }

    #[test]
    fn another_page_cannot_change_anything() {
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(
            post(LOOPBACK, &[host, ("origin", "http://127.0.0.1:8080")]),
            Ok(())
        );
        assert!(matches!(
            post(LOOPBACK, &[host, ("origin", "http://127.0.0.1:3000")]),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(matches!(
            post(LOOPBACK, &[host, ("origin", "null")]),
            Err(Refusal::ForeignOrigin(_))
        ));
        assert!(matches!(
            post(LOOPBACK, &[host, ("sec-fetch-site", "same-site")]),
            Err(Refusal::CrossSite(_))
        ));
        assert_eq!(
            post(LOOPBACK, &[host, ("sec-fetch-site", "same-origin")]),
            Ok(())
        );
        // Reading is not changing: a GET from another page gets nothing it can
        // read anyway (no CORS headers), and the dashboard's own GETs pass.
        let get = check(
            LOOPBACK.parse().unwrap(),
            &Method::GET,
            &headers(&[host, ("origin", "http://evil.example")]),
        );
        assert_eq!(get, Ok(()));
    }

    #[test]
    fn a_body_that_changes_something_is_json() {
        let host = ("host", "127.0.0.1:8080");
        let json = post(
            LOOPBACK,
            &[
                host,
                ("content-length", "2"),
                ("content-type", "application/json; charset=utf-8"),
            ],
        );
        assert_eq!(json, Ok(()));
        for form in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let refused = check(LOOPBACK.parse().unwrap(), &Method::POST, &{
                let mut h = headers(&[host, ("content-length", "2")]);
                h.insert("content-type", HeaderValue::from_static(form));
                h
            });
            assert!(matches!(refused, Err(Refusal::NotJson(_))), "{form}");
            assert_eq!(
                refused.unwrap_err().status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
        assert!(matches!(
            post(LOOPBACK, &[host, ("transfer-encoding", "chunked")]),
            Err(Refusal::NotJson(_))
        ));
        // No body, no type needed: `POST /api/node/kill` from curl.
        assert_eq!(post(LOOPBACK, &[host, ("content-length", "0")]), Ok(()));
    }
}
