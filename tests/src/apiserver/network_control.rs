//! A switch that makes the stand-in's cluster unreachable and reachable again, for tests
//! of how clients (kubegate's discovery: kube-runtime watchers) behave when the API
//! server cannot be reached and when it comes back. On the control port:
//!
//! * `POST /network/disconnect` (204): every open connection on the API (TLS) port is
//!   closed at once, long watches and upgraded streams (exec, attach, port-forward)
//!   included, and until reconnected every new TCP connection to the API port is
//!   accepted and closed straight away: a client gets a connection error (reset, or an
//!   end of stream in the TLS handshake), never an HTTP answer;
//! * `POST /network/reconnect` (204): the API port serves new connections again.
//!
//! Both are idempotent. The control port itself keeps working throughout, and the
//! cluster's state (stored objects, their change history) is untouched: a client that
//! comes back can resume a watch where it was.

use super::StandIn;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

pub(crate) fn routes() -> Router<Arc<StandIn>> {
    Router::new().route("/network/disconnect", post(disconnect)).route("/network/reconnect", post(reconnect))
}

async fn disconnect(State(s): State<Arc<StandIn>>) -> StatusCode {
    s.network.set_connected(false);
    StatusCode::NO_CONTENT
}

async fn reconnect(State(s): State<Arc<StandIn>>) -> StatusCode {
    s.network.set_connected(true);
    StatusCode::NO_CONTENT
}

/// Whether the API port is reachable (it is at start).
pub(crate) struct Network {
    connected: watch::Sender<bool>,
}

impl Default for Network {
    fn default() -> Self {
        Self { connected: watch::Sender::new(true) }
    }
}

impl Network {
    pub(crate) fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        let changed = self.connected.send_if_modified(|current| std::mem::replace(current, connected) != connected);
        if changed {
            tracing::info!(connected, "stand-in API port reachability changed");
        }
    }

    /// A receiver for [`disconnected`].
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Wraps an accepted API-port connection so that a disconnection shuts its socket
    /// down whoever holds it by then: hyper, or a session that took it over with an
    /// HTTP upgrade. The socket closes for good when the returned stream is dropped.
    pub(crate) fn guard(&self, tcp: TcpStream) -> io::Result<GuardedStream> {
        let std = tcp.into_std()?;
        let handle = std.try_clone()?;
        let tcp = TcpStream::from_std(std)?;
        let (dropped, mut gone) = oneshot::channel::<()>();
        let mut connected = self.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = disconnected(&mut connected) => {
                    let _ = handle.shutdown(std::net::Shutdown::Both);
                }
                // The stream was dropped: let the socket close (this task holds a
                // duplicate of it).
                _ = &mut gone => {}
            }
        });
        Ok(GuardedStream { tcp, _dropped: dropped })
    }
}

/// Resolves once the API port is disconnected (at once if it already is).
pub(crate) async fn disconnected(connected: &mut watch::Receiver<bool>) {
    if connected.wait_for(|connected| !*connected).await.is_err() {
        // The switch is gone with the stand-in: nothing will disconnect.
        std::future::pending::<()>().await;
    }
}

/// An API-port TCP connection that [`Network::guard`] watches.
pub(crate) struct GuardedStream {
    tcp: TcpStream,
    /// Dropped with the stream: tells the watching task to let go of the socket.
    _dropped: oneshot::Sender<()>,
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> anyhow::Result<(TcpStream, TcpStream)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        Ok((client, server))
    }

    #[tokio::test]
    async fn a_disconnection_shuts_down_a_guarded_connection_whoever_holds_it() -> anyhow::Result<()> {
        let network = Network::default();
        let (mut client, server) = pair().await?;
        let mut server = network.guard(server)?;
        client.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        network.set_connected(false);
        assert!(!network.is_connected());
        // The client sees the end of the connection although the server side is still
        // held (as an upgraded stream would be).
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await?;
        assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
        let server_read = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf)).await?;
        assert!(matches!(server_read, Ok(0) | Err(_)), "{server_read:?}");

        network.set_connected(true);
        assert!(network.is_connected());
        let (mut client, server) = pair().await?;
        let mut server = network.guard(server)?;
        client.write_all(b"pong").await?;
        server.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok(())
    }

    #[tokio::test]
    async fn dropping_a_guarded_connection_closes_it() -> anyhow::Result<()> {
        let network = Network::default();
        let (mut client, server) = pair().await?;
        drop(network.guard(server)?);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await?;
        assert!(matches!(read, Ok(0)), "{read:?}");
        Ok(())
    }

    #[tokio::test]
    async fn disconnected_resolves_at_once_when_already_disconnected() -> anyhow::Result<()> {
        let network = Network::default();
        let mut receiver = network.subscribe();
        network.set_connected(false);
        tokio::time::timeout(Duration::from_secs(1), disconnected(&mut receiver)).await?;
        network.set_connected(true);
        let pending = tokio::time::timeout(Duration::from_millis(50), disconnected(&mut receiver)).await;
        assert!(pending.is_err(), "still connected");
        Ok(())
    }
}
