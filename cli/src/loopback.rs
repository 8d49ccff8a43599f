//! The loopback redirect receiver (RFC 8252 §7.3): a one-shot HTTP listener on
//! 127.0.0.1 that waits for the browser to come back with `code` and `state`.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    /// connects (a favicon request, a port scanner, a forged callback).
    pub async fn wait_for_code(self, state: &str, timeout: Duration) -> Result<String, LoopbackError> {
        tokio::time::timeout(timeout, self.accept_until_code(state))
            .await
            .map_err(|_| LoopbackError::TimedOut(timeout))?
    }

    async fn accept_until_code(&self, state: &str) -> Result<String, LoopbackError> {
        loop {
            let (mut stream, _) = self.listener.accept().await?;
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
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
            let _ = stream.write_all(response.as_bytes()).await;
            match outcome {
                Some(Ok(code)) => return Ok(code),
                Some(Err(e)) => return Err(e),
                None => continue,
            }
        }
    }
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
