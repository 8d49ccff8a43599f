//! Requests through the gateway with full control over the bytes: a raw HTTP/1.1 client
//! (header case, repeats and `Connection:` exactly as written) and an HTTP/2 client.

use crate::tls::{https_client, root_store};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A response, headers lower-cased.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Sends `head` (request line and headers, CRLF-separated, without the final blank
/// line) over TLS with ALPN `http/1.1`, and reads the response until the server closes.
pub async fn raw_http1(gateway_url: &str, ca: &Path, head: &str) -> anyhow::Result<RawResponse> {
    let mut tls = send_http1_head(gateway_url, ca, head).await?;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), tls.read_to_end(&mut bytes)).await?;
    // Envoy may close without close_notify; what was read is still the response.
    if let Err(e) = read {
        anyhow::ensure!(!bytes.is_empty(), "reading response: {e}");
    }
    parse_http1(&String::from_utf8_lossy(&bytes))
}

/// Like [`raw_http1`], but returns as soon as the response head has arrived: for
/// upgrade requests, whose connection stays open after `101 Switching Protocols`.
pub async fn raw_http1_head(gateway_url: &str, ca: &Path, head: &str) -> anyhow::Result<RawResponse> {
    Ok(raw_http1_upgrade(gateway_url, ca, head).await?.0)
}

/// Like [`raw_http1_head`], but hands back the connection too, to use (or leave silent)
/// after `101 Switching Protocols`; the response's body is what arrived after the head.
pub async fn raw_http1_upgrade(gateway_url: &str, ca: &Path, head: &str) -> anyhow::Result<(RawResponse, TlsStream)> {
    let mut tls = send_http1_head(gateway_url, ca, head).await?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    while !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), tls.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "connection closed before the response head");
        bytes.extend_from_slice(&chunk[..n]);
    }
    Ok((parse_http1(&String::from_utf8_lossy(&bytes))?, tls))
}

/// A TLS connection to the gateway.
pub type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Connects over TLS with ALPN `http/1.1` and writes `head` and the blank line.
async fn send_http1_head(gateway_url: &str, ca: &Path, head: &str) -> anyhow::Result<TlsStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(root_store(ca)?).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let address = gateway_url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    tls.write_all(format!("{head}\r\n\r\n").as_bytes()).await?;
    Ok(tls)
}

fn parse_http1(text: &str) -> anyhow::Result<RawResponse> {
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no header end in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok(RawResponse { status, headers, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// GET over HTTP/2 with the given header lines (names lower-case; repeats allowed).
pub async fn http2_get(
    gateway_url: &str,
    ca: &Path,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<RawResponse> {
    let client = https_client(ca)?.http2_prior_knowledge().build()?;
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        map.append(reqwest::header::HeaderName::from_bytes(name.as_bytes())?, value.parse()?);
    }
    let response = client.get(format!("{gateway_url}{path}")).headers(map).send().await?;
    anyhow::ensure!(response.version() == reqwest::Version::HTTP_2, "not HTTP/2: {:?}", response.version());
    let status = response.status().as_u16();
    let headers =
        response.headers().iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
    Ok(RawResponse { status, headers, body: response.text().await? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_responses() {
        let r = parse_http1("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
    }
}
