//! A closed-loop load generator: `connections` TLS connections, `streams` requests in
//! flight on each (HTTP/2) or one (HTTP/1.1), until `requests` have completed. Each
//! request carries the next of the given bearer tokens, so many distinct users can be
//! simulated (h2load sends one fixed header set).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shape of one load run.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub http2: bool,
    pub connections: usize,
    /// Concurrent requests per connection (HTTP/2 only; HTTP/1.1 has one).
    pub streams: usize,
    pub requests: usize,
    /// Every request's target one never sent before (`?limit=N`, a list option the
    /// upstream ignores), so authz-server's decision cache never answers: the run
    /// measures the decision path. Off, every request has the same target.
    pub distinct_targets: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub requests: usize,
    pub non_2xx: usize,
    pub errors: usize,
    pub elapsed: Duration,
    /// Sorted latencies.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 * p / 100.0).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }
}

fn tls_connector(ca: &Path, http2: bool) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = kubegate_tests::tls::root_store(ca)?;
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

type Sender = Box<dyn FnMut(hyper::Request<Empty<Bytes>>) -> ResponseFuture + Send>;
type ResponseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u16, String>> + Send>>;

async fn connect(address: &str, ca: &Path, http2: bool) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    let tls = tls_connector(ca, http2)?.connect(name, tcp).await?;
    let io = TokioIo::new(tls);
    if http2 {
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(connection);
        Ok(Box::new(move |request| {
            let mut sender = sender.clone();
            Box::pin(async move { finish(sender.send_request(request).await).await })
        }))
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        Ok(Box::new(move |request| {
            let sender = sender.clone();
            Box::pin(async move {
                let mut sender = sender.lock().await;
                sender.ready().await.map_err(|e| e.to_string())?;
                finish(sender.send_request(request).await).await
            })
        }))
    }
}

async fn finish(response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>) -> Result<u16, String> {
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// Makes every target distinct across runs of this process (see [`run`]).
static TARGETS_SENT: AtomicUsize = AtomicUsize::new(0);

/// Runs `shape` against `address` (host:port of a TLS listener trusted by `ca`).
pub async fn run(
    address: &str,
    ca: &Path,
    path: &str,
    tokens: Arc<Vec<String>>,
    shape: LoadShape,
) -> anyhow::Result<LoadResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(shape.requests)));
    let outcomes = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let mut workers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..shape.connections {
        senders.push(Arc::new(tokio::sync::Mutex::new(connect(address, ca, shape.http2).await?)));
    }
    let start = Instant::now();
    let streams = if shape.http2 { shape.streams } else { 1 };
    for sender in &senders {
        for _ in 0..streams {
            let (sender, next, latencies, outcomes, tokens) =
                (sender.clone(), next.clone(), latencies.clone(), outcomes.clone(), tokens.clone());
            let path = path.to_owned();
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= shape.requests {
                        return;
                    }
                    let target = match shape.distinct_targets {
                        false => path.clone(),
                        true => format!("{path}?limit={}", TARGETS_SENT.fetch_add(1, Ordering::Relaxed) + 1),
                    };
                    let request = hyper::Request::get(&target)
                        .header("authorization", format!("Bearer {}", tokens[i % tokens.len()]))
                        .header("host", "kubernetes")
                        .body(Empty::<Bytes>::new());
                    let Ok(request) = request else { return };
                    let begun = Instant::now();
                    let response = (sender.lock().await)(request);
                    let status = response.await;
                    let took = begun.elapsed();
                    match status {
                        Ok(s) if (200..300).contains(&s) => {}
                        Ok(_) => {
                            outcomes.0.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            outcomes.1.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if let Ok(mut l) = latencies.lock() {
                        l.push(took);
                    }
                }
            }));
        }
    }
    let latencies = join_workers(workers, &latencies).await?;
    Ok(LoadResult {
        requests: latencies.len(),
        non_2xx: outcomes.0.load(Ordering::Relaxed),
        errors: outcomes.1.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Waits for every worker and returns the latencies they recorded, sorted.
pub(crate) async fn join_workers(
    workers: Vec<tokio::task::JoinHandle<()>>,
    latencies: &Mutex<Vec<Duration>>,
) -> anyhow::Result<Vec<Duration>> {
    for worker in workers {
        worker.await?;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    latencies.sort_unstable();
    Ok(latencies)
}
