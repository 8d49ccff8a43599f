//! A real-Go oracle: how Go's `net/http` and `net/url`, which kube-apiserver is built on,
//! read a request target. `tests/go-oracle/main.go` (standard library only) answers every
//! request with `URL.Path` (every `%XX` decoded), `URL.RawPath`, `URL.RawQuery`,
//! `URL.Query()` and the error of `url.ParseQuery`, and records each reading as one JSON
//! line. Tests send it exact bytes over a raw TCP socket, so nothing normalises them on
//! the way.
//!
//! It needs a Go toolchain (Debian `golang-go`, installed by `make tools`). Without one,
//! [`GoOracle::start`] panics: a test that depends on Go fails, it does not skip.
//!
//! ```no_run
//! use kubegate_tests::go_oracle::GoOracle;
//! let oracle = GoOracle::start();
//! let reading = oracle.ask(b"/api/v1/namespaces/kube%2Dsystem/pods").expect("read");
//! assert_eq!(reading.path, b"/api/v1/namespaces/kube-system/pods");
//! ```

use serde::Deserialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The oracle's source directory.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go-oracle")
}

/// Where builds go: `<cargo target dir>/go-oracle` (next to the test executable's
/// profile directory), or a directory under the system temp dir.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    // `<target>/debug` (or `<target>/<triple>/debug`): the target dir is its parent.
    match dir.parent() {
        Some(target) if target.join("CACHEDIR.TAG").exists() || dir.join(".fingerprint").exists() => {
            target.join("go-oracle")
        }
        _ => std::env::temp_dir().join("kubegate-go-oracle"),
    }
}

/// Builds the oracle once per process (Go's own build cache makes a rebuild quick) and
/// returns the binary's path. Offline: modules are off the network (`GOPROXY=off`),
/// `GOPATH` and `GOCACHE` live under the build directory.
pub fn go_oracle_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| build().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow::anyhow!("{e}"))
}

fn build() -> anyhow::Result<PathBuf> {
    let dir = build_dir();
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("kubegate-go-oracle");
    // Concurrent test processes each build to their own file, then rename over.
    let partial = dir.join(format!(".kubegate-go-oracle.{}", std::process::id()));
    let output = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(source_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOPATH", dir.join("gopath"))
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0")
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "the Go oracle needs a Go toolchain on PATH (`go`: {e}); install Debian golang-go (`make tools`)"
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "go build of {} failed ({}):\n{}",
        source_dir().display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &binary)?;
    Ok(binary)
}

/// How Go read one request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoReading {
    pub method: String,
    /// The request target as received (`Request.RequestURI`).
    pub request_uri: Vec<u8>,
    /// `URL.Path`: the decoded path kube-apiserver's RequestInfo is built from.
    pub path: Vec<u8>,
    /// `URL.RawPath`: the path as sent, only when it is not the default encoding of `path`.
    pub raw_path: Vec<u8>,
    /// `URL.RawQuery`, as sent.
    pub raw_query: Vec<u8>,
    /// `URL.Query()`: keys in byte order, each with its values in order.
    pub query: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    /// The error of `url.ParseQuery(RawQuery)`, or empty.
    pub query_error: String,
}

impl GoReading {
    /// `path` as text (invalid UTF-8 replaced).
    pub fn path_text(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// The values of `key` as text, `None` when Go has no such key.
    pub fn values(&self, key: &str) -> Option<Vec<String>> {
        self.query
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, values)| values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect())
    }

    /// The whole query as text (invalid UTF-8 replaced).
    pub fn query_text(&self) -> Vec<(String, Vec<String>)> {
        self.query
            .iter()
            .map(|(k, vs)| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (text(k), vs.iter().map(|v| text(v)).collect())
            })
            .collect()
    }
}

/// Why Go gave no reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoRefusal {
    /// Go's HTTP server refused the request itself (an invalid `%` escape in the path,
    /// a control byte in the target: `400 Bad Request`).
    #[error("Go's HTTP server answered {status}: {body}")]
    Rejected { status: u16, body: String },
    /// The exchange with the oracle failed.
    #[error("talking to the Go oracle: {0}")]
    Io(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    method: String,
    #[serde(rename = "requestURIHex")]
    request_uri_hex: String,
    path_hex: String,
    raw_path_hex: String,
    raw_query_hex: String,
    query_pairs: Vec<WirePair>,
    query_error: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePair {
    key_hex: String,
    values_hex: Vec<String>,
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd hex {text:?}"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex {text:?}"))
        })
        .collect()
}

impl Wire {
    fn reading(self) -> Result<GoReading, String> {
        let query = self
            .query_pairs
            .iter()
            .map(|p| Ok((unhex(&p.key_hex)?, p.values_hex.iter().map(|v| unhex(v)).collect::<Result<_, _>>()?)))
            .collect::<Result<_, String>>()?;
        Ok(GoReading {
            method: self.method,
            request_uri: unhex(&self.request_uri_hex)?,
            path: unhex(&self.path_hex)?,
            raw_path: unhex(&self.raw_path_hex)?,
            raw_query: unhex(&self.raw_query_hex)?,
            query,
            query_error: self.query_error,
        })
    }
}

fn parse_reading(json: &[u8]) -> Result<GoReading, String> {
    serde_json::from_slice::<Wire>(json).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(json)))?.reading()
}

/// A running oracle on loopback (plain HTTP/1.1), stopped on drop.
pub struct GoOracle {
    child: Child,
    addr: SocketAddr,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl GoOracle {
    /// Builds (once per process) and starts the oracle on a free loopback port.
    /// Panics, with what to install, when there is no Go toolchain.
    pub fn start() -> GoOracle {
        Self::try_start().unwrap_or_else(|e| panic!("the Go oracle did not start: {e:#}"))
    }

    /// As [`GoOracle::start`], returning the error.
    pub fn try_start() -> anyhow::Result<GoOracle> {
        Self::try_start_with(&[])
    }

    /// Starts the oracle with more arguments (`-listen 127.0.0.1:PORT`, `-tls-cert FILE
    /// -tls-key FILE` to serve TLS and HTTP/2 as an Envoy upstream).
    pub fn try_start_with(args: &[&str]) -> anyhow::Result<GoOracle> {
        let binary = go_oracle_binary()?;
        let dir = tempfile::Builder::new().prefix("kubegate-go-oracle-").tempdir()?;
        let record = dir.path().join("readings.jsonl");
        let log = std::fs::File::create(dir.path().join("go-oracle.log"))?;
        let mut child = Command::new(&binary)
            .arg("-record")
            .arg(&record)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("stdout not piped"))?;
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = send.send(line);
        });
        let line = match receive.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("the Go oracle printed no address within 20 s")
            }
        };
        let addr = match line.trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("go-oracle.log")).unwrap_or_default();
                anyhow::bail!("the Go oracle printed {line:?} ({e}); log:\n{log}")
            }
        };
        Ok(GoOracle { child, addr, record, _dir: dir })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file it records every reading in, one JSON line each.
    pub fn record_file(&self) -> &Path {
        &self.record
    }

    /// Every reading so far, in order.
    pub fn recorded(&self) -> Vec<GoReading> {
        std::fs::read(&self.record)
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| parse_reading(line).ok())
            .collect()
    }

    /// How Go reads `GET <target> HTTP/1.1`; `target` is sent byte for byte.
    pub fn ask(&self, target: &[u8]) -> Result<GoReading, GoRefusal> {
        self.ask_with("GET", target)
    }

    /// As [`GoOracle::ask`] with another method.
    pub fn ask_with(&self, method: &str, target: &[u8]) -> Result<GoReading, GoRefusal> {
        let io = |e: std::io::Error| GoRefusal::Io(e.to_string());
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
        let mut request = Vec::with_capacity(target.len() + 64);
        request.extend_from_slice(method.as_bytes());
        request.push(b' ');
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: go-oracle\r\nConnection: close\r\n\r\n");
        stream.write_all(&request).map_err(io)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(io)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| GoRefusal::Io(format!("no header end in {:?}", String::from_utf8_lossy(&response))))?;
        let (head, body) = (&response[..split], &response[split + 4..]);
        let status = head
            .split(|b| *b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| GoRefusal::Io(format!("no status in {:?}", String::from_utf8_lossy(head))))?;
        if status != 200 {
            return Err(GoRefusal::Rejected { status, body: String::from_utf8_lossy(body).into_owned() });
        }
        parse_reading(body).map_err(GoRefusal::Io)
    }
}

impl Drop for GoOracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
