//! `/metrics` over HTTP for Prometheus, on a thread of its own for the life of a recording.
//! `tiny_http` does the HTTP: one path, a few requests a minute, no async runtime needed.
use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use super::LiveMetrics;
use crate::{Error, Result};

/// The server; stops when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    /// The address it listens on (the port chosen when asked for port 0).
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` and answers `GET /metrics` with `metrics`.
    pub fn start(addr: SocketAddr, metrics: Arc<LiveMetrics>) -> Result<Self> {
        let server = tiny_http::Server::http(addr).map_err(|e| {
            Error::InvalidArgument(format!("--metrics-addr {addr}: cannot listen there ({e})"))
        })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| {
            Error::InvalidArgument(format!("--metrics-addr {addr}: not an IP address"))
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("mp-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = match (request.method(), request.url()) {
                        (tiny_http::Method::Get, "/metrics") => tiny_http::Response::from_string(
                            metrics.encode(),
                        )
                        .with_header(content_type(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )),
                        _ => tiny_http::Response::from_string("modelprobe serves /metrics only\n")
                            .with_status_code(404)
                            .with_header(content_type("text/plain")),
                    };
                    if let Err(e) = request.respond(response) {
                        log::debug!("metrics: answering a scrape failed: {e}");
                    }
                }
            })
            .map_err(|e| {
                Error::InvalidArgument(format!("cannot start the metrics thread ({e})"))
            })?;
        log::info!("serving Prometheus metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr,
        })
    }
}

fn content_type(value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("a valid header")
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
