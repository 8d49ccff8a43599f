//! The websocket side: the `v4`/`v5.channel.k8s.io` channel framing for exec and
//! attach, and the binary tunnel that carries a SPDY port-forward session.
//!
//! Channel framing: each binary message starts with its channel (0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize). v5 adds 255 + channel: "the client closed that channel"
//! (how stdin's end reaches `cat`).

use super::container::ProcessIo;
use super::sessions::{forward, run_process, terminal_sizes};
use super::SessionContext;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message, Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// Close code 1000: gorilla/websocket (kubectl) reads it as a clean end of stream; any
/// other code, or none, is an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

/// The server side of an already-upgraded websocket connection.
pub(super) async fn server<IO: AsyncRead + AsyncWrite + Unpin>(io: IO) -> WebSocketStream<IO> {
    WebSocketStream::from_raw_socket(io, Role::Server, Some(WebSocketConfig::default())).await
}

pub(super) async fn exec<IO>(ws: WebSocketStream<IO>, protocol: &str, cx: SessionContext)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let writer = tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            let message = [&[channel][..], &data].concat();
            if sink.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
    });

    let options = &cx.options;
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(4);
    let reader = tokio::spawn(async move {
        let (mut stdin, mut resize) = (Some(stdin_tx), Some(resize_tx));
        while let Some(Ok(message)) = source.next().await {
            let Message::Binary(data) = message else { continue };
            let (channel, payload) = match data.split_first() {
                Some((c, p)) => (*c, Bytes::copy_from_slice(p)),
                None => continue,
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(payload).await;
                    }
                }
                RESIZE => {
                    if let Some(tx) = &resize {
                        let _ = tx.send(payload).await;
                    }
                }
                CLOSE if payload.first() == Some(&STDIN) => stdin = None,
                CLOSE if payload.first() == Some(&RESIZE) => resize = None,
                _ => {}
            }
        }
    });

    let (stdout_tx, stdout_rx) = mpsc::channel(16);
    let (stderr_tx, stderr_rx) = mpsc::channel(16);
    let stderr_channel = if options.tty { STDOUT } else { STDERR };
    let outputs = [(STDOUT, stdout_rx, options.stdout), (stderr_channel, stderr_rx, options.stderr || options.tty)]
        .map(|(channel, rx, wanted)| {
            let out = out_tx.clone();
            forward(rx, move |chunk| {
                let out = out.clone();
                async move { !wanted || out.send((channel, chunk)).await.is_ok() }
            })
        });
    let io = ProcessIo {
        stdin: options.stdin.then_some(stdin_rx),
        stdout: stdout_tx,
        stderr: stderr_tx,
        resize: options.tty.then(|| terminal_sizes(resize_rx)),
    };
    let exit = run_process(&cx, io).await;
    for output in outputs {
        let _ = output.await;
    }
    tracing::debug!(protocol, ?exit, "exec over websocket finished");
    let _ = out_tx.send((ERROR, Bytes::from(exit.status_json()))).await;
    drop(out_tx);
    let _ = writer.await;
    // Let the client answer the close; then the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
}

/// Carries a byte stream (a SPDY session) in binary messages, as kubectl's port-forward
/// tunnel does; the returned end is what the SPDY server reads and writes.
pub(super) fn tunnel<IO>(ws: WebSocketStream<IO>) -> DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut read_half, mut write_half) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if write_half.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = write_half.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(n) = read_half.read(&mut buffer).await {
            if n == 0 || sink.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                break;
            }
        }
        let _ = sink.send(normal_close()).await;
    });
    theirs
}
