//! Sends a recording's OTLP requests ([`crate::export::otlp`]) to a collector over
//! OTLP/HTTP with protobuf bodies: `POST {endpoint}/v1/traces` (`/v1/metrics`, `/v1/logs`),
//! with the headers a backend wants (an API key). A request the collector throttles
//! (429, 502, 503, 504) is retried with backoff, honouring `Retry-After`; one it refuses fails
//! the push with the collector's words; items it says it rejected are counted, not hidden.
//!
//! Profiles go as pprof to a Pyroscope-style ingest endpoint ([`push_pprof`]):
//! `POST {url}?name=SERVICE.KIND&from=S&until=S&format=pprof`, a gzipped `profile.proto` body
//! per kind (cpu, off_cpu, gpu).
//!
//! Written on `ureq` (blocking, rustls): a push is a handful of sequential requests at the end
//! of a command, which needs no async runtime.
use std::time::Duration;

use crate::export::otlp::{self, Request, Signal};

/// Attempts per request before giving up on a throttling collector.
const ATTEMPTS: u32 = 5;

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The endpoint is not an http(s) URL.
    #[error("bad OTLP endpoint {0:?}: expected http://HOST:PORT or https://HOST:PORT[/PATH]")]
    BadEndpoint(String),
    /// A header is not `NAME=VALUE`.
    #[error("bad OTLP header {0:?}: expected NAME=VALUE")]
    BadHeader(String),
    /// The collector could not be reached or the connection broke.
    #[error("sending {signal} to {url}: {source}")]
    Transport {
        /// The signal being sent.
        signal: &'static str,
        /// Where.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The collector answered with an error status.
    #[error("{url} refused {signal}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Refused {
        /// The signal being sent.
        signal: &'static str,
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the collector's reply.
        message: String,
    },
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Endpoint {
    base: String,
    headers: Vec<(String, String)>,
}

impl Endpoint {
    /// An endpoint from its base URL (`http://localhost:4318`; the signal paths are added) and
    /// `NAME=VALUE` headers, each also read comma-separated as in `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn new(url: &str, headers: &[String]) -> Result<Self, PushError> {
        let base = url.trim_end_matches('/');
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
            return Err(PushError::BadEndpoint(url.to_string()));
        }
        let mut parsed = Vec::new();
        for h in headers.iter().flat_map(|h| h.split(',')) {
            if h.trim().is_empty() {
                continue;
            }
            let (name, value) = h
                .split_once('=')
                .filter(|(n, _)| !n.trim().is_empty())
                .ok_or_else(|| PushError::BadHeader(redact(h)))?;
            parsed.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Endpoint {
            base: base.to_string(),
            headers: parsed,
        })
    }

    /// The base URL, as given (without a trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL a signal is posted to.
    pub fn url(&self, signal: Signal) -> String {
        format!("{}{}", self.base, signal.path())
    }
}

/// Where profiles are pushed as pprof: an ingest URL (`http://pyroscope:4040/ingest`; a
/// bare `http://HOST:PORT` gets `/ingest`) and headers.
#[derive(Debug, Clone)]
pub struct PprofEndpoint {
    url: String,
    headers: Vec<(String, String)>,
}

impl PprofEndpoint {
    /// An endpoint from its URL and `NAME=VALUE` headers (as for [`Endpoint::new`]).
    pub fn new(url: &str, headers: &[String]) -> Result<Self, PushError> {
        let e = Endpoint::new(url, headers)?;
        let after_scheme = e.base.split_once("://").map_or("", |(_, r)| r);
        let url = if after_scheme.contains('/') {
            e.base
        } else {
            format!("{}/ingest", e.base)
        };
        Ok(PprofEndpoint {
            url,
            headers: e.headers,
        })
    }

    /// The ingest URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The HTTP client both pushes use: errors are statuses, not failures.
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `body` to `url`, retrying (with backoff, honouring `Retry-After`) while the server
/// throttles (429, 502, 503, 504): the last status and up to 1 MiB of its reply. `signal`
/// names what is sent in errors.
fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
    signal: &'static str,
) -> Result<(u16, Vec<u8>), PushError> {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        let mut req = agent.post(url).header("Content-Type", content_type);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = req.send(body).map_err(|e| PushError::Transport {
            signal,
            url: url.to_string(),
            source: Box::new(e),
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let reply = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .unwrap_or_default();
        if !matches!(status, 429 | 502 | 503 | 504) || attempt == ATTEMPTS {
            return Ok((status, reply));
        }
        let pause = retry_after.map_or(wait, |s| Duration::from_secs(s.min(30)));
        log::info!("{url} answered {status}; retrying in {pause:?}");
        std::thread::sleep(pause);
        wait *= 2;
    }
    unreachable!("the last attempt returns")
}

/// The refusal of `url` with `status`, quoting the start of its reply.
fn refused(signal: &'static str, url: String, status: u16, reply: &[u8]) -> PushError {
    PushError::Refused {
        signal,
        url,
        status,
        message: String::from_utf8_lossy(&reply[..reply.len().min(200)])
            .trim()
            .replace('\n', " "),
    }
}

/// Sends the recording's profiles (CPU, off-CPU, GPU: those it has) to `endpoint`, named
/// `service.cpu` and so on; returns how many were sent.
pub fn push_pprof(
    endpoint: &PprofEndpoint,
    rec: &crate::recording::Recording,
    service: &str,
) -> Result<usize, PushError> {
    use crate::export::pprof::{self, Kind};
    let agent = client();
    let secs = |ns: u64| {
        let ms = rec.meta.start_unix_ms as i64 + (ns as i64 - rec.meta.start_ns as i64) / 1_000_000;
        (ms / 1000).max(0)
    };
    let from = secs(rec.meta.start_ns);
    let until = secs(rec.meta.end_ns.max(rec.meta.start_ns)).max(from + 1);
    let mut sent = 0;
    for (kind, suffix) in [
        (Kind::Cpu, "cpu"),
        (Kind::OffCpu, "off_cpu"),
        (Kind::Gpu, "gpu"),
        (Kind::Memory, "memory"),
    ] {
        let Some(profile) = pprof::profile(rec, kind) else {
            continue;
        };
        let body = pprof::gzipped(&profile);
        let sep = if endpoint.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}name={service}.{suffix}&from={from}&until={until}&format=pprof&spyName=modelprobe",
            endpoint.url
        );
        let (status, reply) = post(
            &agent,
            &url,
            &endpoint.headers,
            "application/octet-stream",
            &body,
            "profiles",
        )?;
        if !(200..300).contains(&status) {
            return Err(refused("profiles", endpoint.url.clone(), status, &reply));
        }
        sent += 1;
    }
    Ok(sent)
}

/// A header as an error may show it: its name, never its value.
fn redact(h: &str) -> String {
    match h.split_once('=') {
        Some((name, _)) => format!("{name}=…"),
        None => "(a header without '=')".into(),
    }
}

/// What a push sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Requests sent.
    pub requests: usize,
    /// Spans, metric data points... sent, per signal (traces, metrics, logs, profiles).
    pub items: [usize; 4],
    /// Items the collector said it rejected.
    pub rejected: i64,
    /// Bytes of request bodies.
    pub bytes: usize,
    /// Profiles requests not sent: the collector does not take the (development) profiles
    /// signal.
    pub profiles_skipped: usize,
}

/// Statuses with which a collector says it has no profiles signal (not enabled, or too old).
const NO_PROFILES: [u16; 3] = [404, 415, 501];

/// Sends every request in order; stops at the first that fails for good. `progress` hears each
/// request as it goes out.
pub fn push(
    endpoint: &Endpoint,
    requests: &[Request],
    mut progress: impl FnMut(usize, &Request),
) -> Result<Pushed, PushError> {
    let agent = client();
    let mut done = Pushed::default();
    let mut no_profiles = false;
    for (n, r) in requests.iter().enumerate() {
        if no_profiles && r.signal == Signal::Profiles {
            done.profiles_skipped += 1;
            continue;
        }
        progress(n, r);
        let url = endpoint.url(r.signal);
        let name = r.signal.name();
        let (status, reply) = post(
            &agent,
            &url,
            &endpoint.headers,
            "application/x-protobuf",
            &r.body,
            name,
        )?;
        if r.signal == Signal::Profiles && NO_PROFILES.contains(&status) {
            log::warn!(
                "{url} does not take profiles (HTTP {status}; OTLP profiles are a development signal a collector must enable): profiles not sent"
            );
            no_profiles = true;
            done.profiles_skipped += 1;
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(refused(name, url, status, &reply));
        }
        if let Some((rejected, message)) = otlp::rejected(r.signal, &reply) {
            log::warn!("{url} rejected {rejected} of {} {name}: {message}", r.items);
            done.rejected += rejected;
        }
        done.requests += 1;
        done.items[r.signal as usize] += r.items;
        done.bytes += r.body.len();
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_headers_are_checked_and_values_never_shown() {
        let e = Endpoint::new("http://localhost:4318/", &["a=1,b = x=y".into()]).unwrap();
        assert_eq!(e.url(Signal::Traces), "http://localhost:4318/v1/traces");
        assert_eq!(
            e.headers,
            [("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
        for bad in ["localhost:4318", "http://", "ftp://x", "https:///v1"] {
            assert!(Endpoint::new(bad, &[]).is_err(), "{bad}");
        }
        let err = Endpoint::new("http://x", &["=secret".into()])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
        let p = PprofEndpoint::new("http://pyroscope:4040", &[]).unwrap();
        assert_eq!(p.url(), "http://pyroscope:4040/ingest");
        let p = PprofEndpoint::new("https://x/api/ingest/", &[]).unwrap();
        assert_eq!(p.url(), "https://x/api/ingest");
        let err = Endpoint::new("http://x", &["tokenonly".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=VALUE"), "{err}");
    }

    #[test]
    fn a_collector_without_the_profiles_signal_gets_the_rest() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for _ in 0..2 {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(10)) else {
                    break;
                };
                paths.push(req.url().to_string());
                let status = if req.url().contains("profiles") {
                    404
                } else {
                    200
                };
                let _ = req.respond(tiny_http::Response::empty(status));
            }
            paths
        });
        let request = |signal| Request {
            signal,
            items: 1,
            body: Vec::new(),
        };
        let e = Endpoint::new(&format!("http://127.0.0.1:{port}"), &[]).unwrap();
        let done = push(
            &e,
            &[
                request(Signal::Profiles),
                request(Signal::Profiles),
                request(Signal::Traces),
            ],
            |_, _| {},
        )
        .unwrap();
        assert_eq!((done.requests, done.profiles_skipped), (1, 2));
        assert_eq!(done.items, [1, 0, 0, 0]);
        // The second profiles request is not even tried.
        let paths = seen.join().unwrap();
        assert_eq!(paths, ["/v1development/profiles", "/v1/traces"]);
    }
}
