//! exec, attach and port-forward: the upgrade handshake for both transports kubectl
//! speaks, then the session.
//!
//! * websocket (kubectl >= 1.30 for exec/attach, >= 1.31 for port-forward):
//!   `v5.channel.k8s.io` / `v4.channel.k8s.io` channel framing ([`websocket`]), and
//!   `SPDY/3.1+portforward.k8s.io`, a SPDY session tunnelled in binary messages;
//! * SPDY/3.1 (`X-Stream-Protocol-Version: v4.channel.k8s.io` or `portforward.k8s.io`),
//!   one SPDY stream per kubectl stream ([`spdy`], [`sessions`]).
//!
//! Behind them runs [`container`]: echo, identity, sleep, `stty size`, and the `tar` and
//! `test -d` that `kubectl cp` uses; port-forward reaches an echo service on port 8080.

pub mod container;
mod sessions;
pub mod spdy;
mod websocket;

use super::identity::UserInfo;
use super::request_info::Query;
use super::StandIn;
use axum::body::Body;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// The port the stand-in's pods serve (an echo service) for port-forward.
pub const POD_ECHO_PORT: u16 = 8080;

const EXEC_WEBSOCKET_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const EXEC_SPDY_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const PORT_FORWARD_SPDY_PROTOCOL: &str = "portforward.k8s.io";

/// Which subresource was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

/// What the query string of an exec or attach asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// As kube-apiserver decodes PodExecOptions from `URL.Query()`: every `command`
    /// value, and the bools by `Convert_Slice_string_To_bool` (`stdin=` is true).
    pub fn from_query(query: &Query) -> Self {
        Self {
            command: query.values("command").iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect(),
            stdin: query.bool("stdin"),
            stdout: query.bool("stdout"),
            stderr: query.bool("stderr"),
            tty: query.bool("tty"),
        }
    }
}

/// The transport the client asked to upgrade to, and the sub-protocol agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    WebSocket { protocol: String, accept_key: String },
    Spdy { protocol: String },
}

impl Transport {
    /// For the audit file: `websocket v5.channel.k8s.io`, `SPDY/3.1 portforward.k8s.io`.
    pub fn describe(&self) -> String {
        match self {
            Transport::WebSocket { protocol, .. } => format!("websocket {protocol}"),
            Transport::Spdy { protocol } => format!("SPDY/3.1 {protocol}"),
        }
    }
}

/// Why an upgrade was not accepted: the status and message kube-apiserver would give.
#[derive(Debug)]
pub struct Refused(pub u16, pub String);

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Picks the transport and sub-protocol, as kubelet does: the first of the client's
/// protocols that the server speaks.
pub fn negotiate(headers: &HeaderMap, kind: StreamKind) -> Result<Transport, Refused> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let pick = |offered: Vec<String>, supported: &[&str]| offered.into_iter().find(|p| supported.contains(&p.as_str()));
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers.get("sec-websocket-key").ok_or_else(|| Refused(400, "missing Sec-WebSocket-Key".into()))?;
        let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let supported = match kind {
            StreamKind::PortForward => &[PORT_FORWARD_WEBSOCKET_PROTOCOL][..],
            _ => EXEC_WEBSOCKET_PROTOCOLS,
        };
        let protocol = pick(header_values(headers, "sec-websocket-protocol"), supported)
            .ok_or_else(|| Refused(400, "unable to negotiate a websocket sub-protocol".into()))?;
        return Ok(Transport::WebSocket { protocol, accept_key });
    }
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        let supported = match kind {
            StreamKind::PortForward => &[PORT_FORWARD_SPDY_PROTOCOL][..],
            _ => EXEC_SPDY_PROTOCOLS,
        };
        let protocol = pick(header_values(headers, "x-stream-protocol-version"), supported)
            .ok_or_else(|| Refused(403, "unable to upgrade: unable to negotiate protocol".into()))?;
        return Ok(Transport::Spdy { protocol });
    }
    Err(Refused(400, "Upgrade request required".into()))
}

/// Everything a session needs once the connection is upgraded.
pub(crate) struct SessionContext {
    pub stand_in: Arc<StandIn>,
    pub pod: (String, String),
    pub user: UserInfo,
    pub kind: StreamKind,
    pub options: ExecOptions,
}

/// Answers 101 and runs the session on the upgraded connection.
pub(crate) fn accept(parts: &mut Parts, transport: Transport, session: SessionContext) -> Response {
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        let mut response = Response::new(Body::from("the connection cannot be upgraded"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    match &transport {
        Transport::WebSocket { protocol, accept_key } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            set(headers, "sec-websocket-accept", accept_key);
            set(headers, "sec-websocket-protocol", protocol);
        }
        Transport::Spdy { protocol } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            set(headers, "x-stream-protocol-version", protocol);
        }
    }
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run_session(TokioIo::new(upgraded), transport, session).await,
            Err(error) => tracing::warn!(%error, "upgrade failed"),
        }
    });
    response
}

async fn run_session<IO>(io: IO, transport: Transport, cx: SessionContext)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    match (transport, cx.kind) {
        (Transport::WebSocket { .. }, StreamKind::PortForward) => {
            let tunnel = websocket::tunnel(websocket::server(io).await);
            sessions::port_forward(spdy::SpdySession::start(tunnel)).await;
        }
        (Transport::WebSocket { protocol, .. }, _) => {
            websocket::exec(websocket::server(io).await, &protocol, cx).await;
        }
        (Transport::Spdy { .. }, StreamKind::PortForward) => {
            sessions::port_forward(spdy::SpdySession::start(io)).await;
        }
        (Transport::Spdy { .. }, _) => sessions::spdy_exec(spdy::SpdySession::start(io), cx).await,
    }
}
