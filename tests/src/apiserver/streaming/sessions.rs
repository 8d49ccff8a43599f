//! The kubelet's side of a SPDY session: exec/attach (one SPDY stream per kubectl
//! stream, named by its `streamtype` header) and port-forward (a data and an error
//! stream per forwarded connection, paired by `requestid`).

use super::container::{self, Exit, ProcessIo, TerminalSize};
use super::spdy::{IncomingStream, SpdySession, StreamWriter};
use super::{SessionContext, StreamKind, POD_ECHO_PORT};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the client has to open every stream it announced (kubelet: 30 s).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the container process for an exec or attach.
pub(super) async fn run_process(cx: &SessionContext, io: ProcessIo) -> Exit {
    let command = if cx.kind == StreamKind::Attach { Vec::new() } else { cx.options.command.clone() };
    let process = container::ProcessContext { pod: cx.pod.clone(), user: &cx.user, files: &cx.stand_in.files };
    container::run(&command, io, process).await
}

/// Copies what the process writes on `rx` to `write`, until the process drops its end.
pub(super) fn forward<F, Fut>(mut rx: mpsc::Receiver<Bytes>, write: F) -> JoinHandle<()>
where
    F: Fn(Bytes) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            if !write(chunk).await {
                break;
            }
        }
    })
}

/// Parses the resize stream: one JSON `{"Width":..,"Height":..}` after another.
pub(super) fn terminal_sizes(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buffer = Vec::new();
        while let Some(chunk) = data.recv().await {
            buffer.extend_from_slice(&chunk);
            let mut stream = serde_json::Deserializer::from_slice(&buffer).into_iter::<TerminalSize>();
            let mut used = 0;
            while let Some(Ok(size)) = stream.next() {
                used = stream.byte_offset();
                if tx.send(size).await.is_err() {
                    return;
                }
            }
            buffer.drain(..used);
        }
    });
    rx
}

fn writer_sink(
    writer: StreamWriter,
) -> impl Fn(Bytes) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    move |chunk| {
        let writer = writer.clone();
        Box::pin(async move { writer.write(chunk).await.is_ok() })
    }
}

/// Waits for the streams the query announced: error, and stdin, stdout, stderr (not
/// with a TTY) and resize (only with a TTY) as asked.
async fn collect_streams(session: &mut SpdySession, cx: &SessionContext) -> Option<HashMap<String, IncomingStream>> {
    let o = &cx.options;
    let expected =
        1 + usize::from(o.stdin) + usize::from(o.stdout) + usize::from(o.stderr && !o.tty) + usize::from(o.tty);
    let mut streams = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while streams.len() < expected {
        let stream = tokio::time::timeout_at(deadline, session.streams.recv()).await.ok()??;
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        streams.insert(kind, stream);
    }
    Some(streams)
}

pub(super) async fn spdy_exec(mut session: SpdySession, cx: SessionContext) {
    let Some(mut streams) = collect_streams(&mut session, &cx).await else {
        tracing::warn!("exec: the client did not open the streams it announced");
        return session.close().await;
    };
    let Some(error) = streams.remove("error") else {
        return session.close().await;
    };
    let (stdout_tx, stdout_rx) = mpsc::channel(16);
    let (stderr_tx, stderr_rx) = mpsc::channel(16);
    let mut outputs = Vec::new();
    let mut finishers = Vec::new();
    for (name, rx) in [("stdout", stdout_rx), ("stderr", stderr_rx)] {
        // With a TTY there is no stderr stream: the terminal is stdout.
        if let Some(own) = streams.get(name) {
            finishers.push(own.writer.clone());
        }
        let target = streams.get(name).or_else(|| streams.get("stdout")).map(|s| s.writer.clone());
        match target {
            Some(writer) => outputs.push(forward(rx, writer_sink(writer))),
            None => outputs.push(forward(rx, |_| async { true })),
        }
    }
    let io = ProcessIo {
        stdin: streams.remove("stdin").map(|s| s.data),
        stdout: stdout_tx,
        stderr: stderr_tx,
        resize: streams.remove("resize").map(|s| terminal_sizes(s.data)),
    };
    let exit = run_process(&cx, io).await;
    for output in outputs {
        let _ = output.await;
    }
    for writer in finishers {
        writer.finish().await;
    }
    let _ = error.writer.write(Bytes::from(exit.status_json())).await;
    error.writer.finish().await;
    session.close().await;
}

/// Port-forward: every connection kubectl accepts locally becomes an error and a data
/// stream; data reaches the pod's echo service on [`POD_ECHO_PORT`].
pub(super) async fn port_forward(mut session: SpdySession) {
    let mut pending: HashMap<String, (Option<IncomingStream>, Option<IncomingStream>)> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let request = stream.header("requestid").unwrap_or_default().to_owned();
        let slot = pending.entry(request.clone()).or_default();
        match stream.header("streamtype") {
            Some("error") => slot.0 = Some(stream),
            Some("data") => slot.1 = Some(stream),
            _ => continue,
        }
        if let (Some(_), Some(_)) = slot {
            if let Some((Some(error), Some(data))) = pending.remove(&request) {
                tokio::spawn(forward_connection(error, data));
            }
        }
    }
    session.close().await;
}

async fn forward_connection(error: IncomingStream, mut data: IncomingStream) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
    if port != POD_ECHO_PORT {
        let message = format!(
            "an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod: \
             failed to connect to localhost:{port} inside the pod: connection refused"
        );
        let _ = error.writer.write(Bytes::from(message)).await;
    } else {
        while let Some(chunk) = data.data.recv().await {
            if data.writer.write(chunk).await.is_err() {
                break;
            }
        }
    }
    data.writer.finish().await;
    error.writer.finish().await;
}
