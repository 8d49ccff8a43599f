//! The loopback redirect receiver (RFC 8252 §7.3): a one-shot HTTP listener on
//! 127.0.0.1 that waits for the browser to come back with `code` and `state`.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// How long one connection may take to send its request. A browser sends it at once;
/// a connection that says nothing (a browser's speculative preconnect, a local process
/// poking the port) is closed after this, and never holds up the others.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog for a free slot (at most
/// [`READ_TIMEOUT`]), so a flood of silent connections delays the callback, not loses it.
const MAX_CONNECTIONS: usize = 64;
/// The request line and headers we read at most.
const MAX_REQUEST_BYTES: usize = 8192;

/// Why no authorization code arrived.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("loopback listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("no login completed within {0:?}")]
    TimedOut(Duration),
    #[error("the identity provider returned an error: {0}")]
    Provider(String),
}

/// A bound listener; its port goes into the redirect URI before the browser opens.
pub struct LoopbackReceiver {
    listener: TcpListener,
}

impl LoopbackReceiver {
    pub async fn bind() -> Result<Self, LoopbackError> {
        Ok(Self { listener: TcpListener::bind(("127.0.0.1", 0)).await? })
    }

    pub fn redirect_uri(&self) -> Result<String, LoopbackError> {
        Ok(format!("http://127.0.0.1:{}/callback", self.listener.local_addr()?.port()))
    }

    /// Waits for the callback whose `state` matches, ignoring anything else that
    /// connects (a favicon request, a port scanner, a forged callback, a connection
    /// that never speaks).
    pub async fn wait_for_code(self, state: &str, timeout: Duration) -> Result<String, LoopbackError> {
        tokio::time::timeout(timeout, self.accept_until_code(state))
            .await
            .map_err(|_| LoopbackError::TimedOut(timeout))?
    }

    /// Serves each connection in its own task, with [`READ_TIMEOUT`] to send its
    /// request, and returns the first callback with our state. The tasks end with the
    /// login (the set aborts them when dropped).
    async fn accept_until_code(&self, state: &str) -> Result<String, LoopbackError> {
        let (outcomes, mut results) = mpsc::channel::<Result<String, LoopbackError>>(1);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let next = async {
                let slot = slots.clone().acquire_owned().await;
                (slot, self.listener.accept().await)
            };
            tokio::select! {
                Some(outcome) = results.recv() => return outcome,
                (slot, accepted) = next => {
                    let (stream, _) = accepted?;
                    let (outcomes, state) = (outcomes.clone(), state.to_owned());
                    connections.spawn(async move {
                        let _slot = slot;
                        if let Some(outcome) = serve_connection(stream, &state, READ_TIMEOUT).await {
                            let _ = outcomes.send(outcome).await;
                        }
                    });
                    // Forget connections that are done.
                    while connections.try_join_next().is_some() {}
                }
            }
        }
    }
}

/// Reads one request (within `read_timeout`), answers it, and returns what it meant
/// for the login: `None` for anything but our callback, or a connection that sent no
/// request line in time.
async fn serve_connection(
    mut stream: TcpStream,
    state: &str,
    read_timeout: Duration,
) -> Option<Result<String, LoopbackError>> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while buf.len() < MAX_REQUEST_BYTES && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let timed_out = tokio::time::timeout(read_timeout, read).await.is_err();
    let request = String::from_utf8_lossy(&buf).into_owned();
    if timed_out && !request.contains("\r\n") {
        return None;
    }
    let outcome = parse_callback(&request, state);
    let page = match &outcome {
        Some(Ok(_)) => "Logged in to kubegate. You can close this window and return to the terminal.",
        Some(Err(_)) => "kubegate login failed; see the terminal.",
        None => "Not found.",
    };
    let status = if outcome.is_some() { "200 OK" } else { "404 Not Found" };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    let _ = tokio::time::timeout(read_timeout, stream.write_all(response.as_bytes())).await;
    outcome
}

/// `Some(Ok(code))` for the expected callback, `Some(Err)` for a provider error with
/// the expected state, `None` for anything else.
fn parse_callback(request: &str, state: &str) -> Option<Result<String, LoopbackError>> {
    let target = request.lines().next()?.strip_prefix("GET ")?.split(' ').next()?;
    let url = url::Url::parse(&format!("http://127.0.0.1{target}")).ok()?;
    if url.path() != "/callback" {
        return None;
    }
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if param("state").as_deref() != Some(state) {
        return None;
    }
    if let Some(error) = param("error") {
        let description = param("error_description").unwrap_or_default();
        return Some(Err(LoopbackError::Provider(format!("{error} {description}").trim().to_owned())));
    }
    param("code").map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attack: a local process (or a browser's speculative preconnect) opens a
    /// connection to the redirect port and says nothing, or starts a request and
    /// stalls; the real callback from the browser must still log in at once, not wait
    /// for the login to time out.
    #[tokio::test]
    async fn a_silent_connection_does_not_block_the_real_callback() {
        let receiver = LoopbackReceiver::bind().await.unwrap_or_else(|e| panic!("{e}"));
        let uri = receiver.redirect_uri().unwrap_or_else(|e| panic!("{e}"));
        let addr = uri.trim_start_matches("http://").trim_end_matches("/callback").to_owned();
        let waiting = tokio::spawn(receiver.wait_for_code("s1", Duration::from_secs(60)));
        let silent = TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
        let mut stalled = TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
        stalled.write_all(b"GET /callback?state=s1&co").await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(100)).await;

        let started = std::time::Instant::now();
        let mut browser = TcpStream::connect(&addr).await.unwrap_or_else(|e| panic!("{e}"));
        browser
            .write_all(b"GET /callback?code=the-code&state=s1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let code = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        let code = code.unwrap_or_else(|_| panic!("the callback was held up by the silent connections"));
        assert_eq!(code.ok().and_then(Result::ok).as_deref(), Some("the-code"));
        assert!(started.elapsed() < READ_TIMEOUT, "served without waiting out the others");
        let mut page = String::new();
        let _ = browser.read_to_string(&mut page).await;
        assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("Logged in"), "{page}");
        drop((silent, stalled));
    }

    /// A connection that never sends a request line is closed after the read timeout,
    /// so silent connections cannot pile up for the whole login.
    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_read_timeout() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        let (server, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let read_timeout = Duration::from_millis(200);
        let served = tokio::time::timeout(read_timeout * 10, serve_connection(server, "s1", read_timeout)).await;
        assert!(matches!(served, Ok(None)), "gave up on the silent connection");
        drop(client);
    }

    #[test]
    fn accepts_only_the_callback_with_our_state() {
        let ok = parse_callback("GET /callback?code=abc&state=s1 HTTP/1.1\r\n", "s1");
        assert!(matches!(ok, Some(Ok(c)) if c == "abc"));
        assert!(parse_callback("GET /callback?code=abc&state=forged HTTP/1.1\r\n", "s1").is_none());
        assert!(parse_callback("GET /favicon.ico HTTP/1.1\r\n", "s1").is_none());
        assert!(matches!(
            parse_callback("GET /callback?error=access_denied&state=s1 HTTP/1.1\r\n", "s1"),
            Some(Err(LoopbackError::Provider(_)))
        ));
    }
}
