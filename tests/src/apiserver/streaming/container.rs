//! What runs "inside" the stand-in's containers when kubectl execs or attaches: a fixed,
//! harmless set of commands, transport-independent (websocket and SPDY feed the same
//! [`ProcessIo`]).
//!
//! * `cat`: stdin to stdout until stdin closes;
//! * `echo ARGS`, `whoami` (the identity the API server derived), `sleep N` (silent);
//! * `stty size`: waits for the terminal size kubectl sends and prints `ROWS COLS`;
//! * `test -d PATH`, `tar cf - PATH...`, `tar xmf - -C DIR` on an in-memory file system
//!   per pod: what `kubectl cp` runs;
//! * `exit N`, `false`; anything else exits 127 like a shell.
//!
//! Attach joins the container's main process, which echoes stdin back.

use super::super::identity::UserInfo;
use bytes::Bytes;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A terminal size as kubectl sends it on the resize stream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of one exec or attach, as the client asked for them.
pub struct ProcessIo {
    /// `None` when the client sent no stdin; a closed channel is end of input.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: mpsc::Sender<Bytes>,
    /// With a TTY, stderr is the terminal too: the transport points this at stdout.
    pub stderr: mpsc::Sender<Bytes>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Success,
    Code(i32),
}

impl Exit {
    /// The Status kubectl reads from the error stream (remotecommand v4 and later).
    pub fn status_json(&self) -> String {
        match self {
            Exit::Success => serde_json::json!({"metadata": {}, "status": "Success"}).to_string(),
            Exit::Code(code) => serde_json::json!({
                "metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            })
            .to_string(),
        }
    }
}

/// One pod's files: absolute path to contents.
type FileSystem = BTreeMap<String, Vec<u8>>;

/// Files per pod (`namespace`, `name`), so that `kubectl cp` into a pod can be copied
/// back out.
#[derive(Default)]
pub struct PodFiles {
    files: Mutex<BTreeMap<(String, String), FileSystem>>,
}

impl PodFiles {
    fn with<T>(&self, pod: &(String, String), f: impl FnOnce(&mut FileSystem) -> T) -> T {
        let mut all = match self.files.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(all.entry(pod.clone()).or_default())
    }
}

/// What the process needs to know about where it runs.
pub struct ProcessContext<'a> {
    pub pod: (String, String),
    pub user: &'a UserInfo,
    pub files: &'a PodFiles,
}

/// Runs `command` (exec) or the main process (`command` empty: attach).
pub async fn run(command: &[String], io: ProcessIo, cx: ProcessContext<'_>) -> Exit {
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["cat"] => copy_stdin_to_stdout(io).await,
        ["echo", rest @ ..] => print(&io.stdout, format!("{}\n", rest.join(" "))).await,
        ["whoami"] => {
            let line = format!("user={} groups={}\n", cx.user.username, cx.user.groups.join(","));
            print(&io.stdout, line).await
        }
        ["sleep", seconds] => match seconds.parse::<u64>() {
            Ok(seconds) => {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                Exit::Success
            }
            Err(_) => fail(&io.stderr, "sleep: invalid time interval", 1).await,
        },
        ["stty", "size"] => terminal_size(io).await,
        ["test", "-d", path] => {
            let dir = normalise(path);
            let exists =
                dir == "/" || cx.files.with(&cx.pod, |fs| fs.keys().any(|f| f.starts_with(&format!("{dir}/"))));
            if exists {
                Exit::Success
            } else {
                Exit::Code(1)
            }
        }
        ["tar", flags, "-", paths @ ..] if flags.trim_start_matches('-').starts_with('c') => {
            tar_create(&io, paths, &cx).await
        }
        ["tar", rest @ ..] if rest.iter().any(|a| a.trim_start_matches('-').starts_with('x')) => {
            tar_extract(io, rest, &cx).await
        }
        ["false"] => Exit::Code(1),
        ["exit", code] => Exit::Code(code.parse().unwrap_or(2)),
        [other, ..] => fail(&io.stderr, &format!("stand-in: {other}: command not found"), 127).await,
    }
}

async fn print(out: &mpsc::Sender<Bytes>, text: String) -> Exit {
    let _ = out.send(Bytes::from(text)).await;
    Exit::Success
}

async fn fail(err: &mpsc::Sender<Bytes>, message: &str, code: i32) -> Exit {
    let _ = err.send(Bytes::from(format!("{message}\n"))).await;
    Exit::Code(code)
}

async fn copy_stdin_to_stdout(mut io: ProcessIo) -> Exit {
    if let Some(stdin) = io.stdin.as_mut() {
        while let Some(chunk) = stdin.recv().await {
            if io.stdout.send(chunk).await.is_err() {
                break;
            }
        }
    }
    Exit::Success
}

async fn terminal_size(mut io: ProcessIo) -> Exit {
    let Some(resize) = io.resize.as_mut() else {
        return fail(&io.stderr, "stty: 'standard input': Inappropriate ioctl for device", 1).await;
    };
    match tokio::time::timeout(Duration::from_secs(10), resize.recv()).await {
        Ok(Some(size)) => print(&io.stdout, format!("{} {}\r\n", size.height, size.width)).await,
        _ => fail(&io.stderr, "stty: no terminal size received", 1).await,
    }
}

/// `/tmp/x/` → `/tmp/x`; relative paths are relative to `/`.
fn normalise(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// `tar cf - PATH...`: an archive of the files under each path, names without the
/// leading `/`, like GNU tar.
async fn tar_create(io: &ProcessIo, paths: &[&str], cx: &ProcessContext<'_>) -> Exit {
    let wanted: Vec<String> = paths.iter().map(|p| normalise(p)).collect();
    let selected: Vec<(String, Vec<u8>)> = cx.files.with(&cx.pod, |fs| {
        fs.iter()
            .filter(|(name, _)| wanted.iter().any(|w| *name == w || name.starts_with(&format!("{w}/"))))
            .map(|(name, data)| (name.clone(), data.clone()))
            .collect()
    });
    if selected.is_empty() {
        let message = format!("tar: {}: Cannot stat: No such file or directory", paths.join(" "));
        return fail(&io.stderr, &message, 2).await;
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in &selected {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        if builder.append_data(&mut header, name.trim_start_matches('/'), data.as_slice()).is_err() {
            return fail(&io.stderr, "tar: cannot write archive", 2).await;
        }
    }
    let Ok(archive) = builder.into_inner() else {
        return fail(&io.stderr, "tar: cannot write archive", 2).await;
    };
    for chunk in archive.chunks(256 * 1024) {
        if io.stdout.send(Bytes::copy_from_slice(chunk)).await.is_err() {
            break;
        }
    }
    Exit::Success
}

/// `tar xmf - -C DIR` (kubectl adds `--no-same-permissions --no-same-owner`): stores
/// the archive's regular files under `DIR`.
async fn tar_extract(mut io: ProcessIo, args: &[&str], cx: &ProcessContext<'_>) -> Exit {
    let dir = args.iter().position(|a| *a == "-C").and_then(|i| args.get(i + 1)).map_or("/".into(), |d| normalise(d));
    let mut archive = Vec::new();
    if let Some(stdin) = io.stdin.as_mut() {
        while let Some(chunk) = stdin.recv().await {
            archive.extend_from_slice(&chunk);
        }
    }
    let extracted = match unpack(&archive, &dir) {
        Ok(files) => files,
        Err(message) => return fail(&io.stderr, message, 2).await,
    };
    cx.files.with(&cx.pod, |fs| fs.extend(extracted));
    Exit::Success
}

/// The regular files of a tar archive, named under `dir`.
fn unpack(archive: &[u8], dir: &str) -> Result<Vec<(String, Vec<u8>)>, &'static str> {
    let mut reader = tar::Archive::new(archive);
    let entries = reader.entries().map_err(|_| "tar: This does not look like a tar archive")?;
    let mut files = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|_| "tar: Unexpected EOF in archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(|_| "tar: Unexpected EOF in archive")?;
        files.push((format!("{}/{}", dir.trim_end_matches('/'), name.trim_start_matches('/')), data));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo { username: "alice".into(), uid: String::new(), groups: vec!["g".into()], extra: BTreeMap::new() }
    }

    async fn run_with_stdin(files: &PodFiles, command: &[&str], stdin: Vec<u8>) -> (Exit, Vec<u8>) {
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let (stdout, mut stdout_rx) = mpsc::channel(1024);
        let (stderr, _stderr_rx) = mpsc::channel(16);
        let io = ProcessIo { stdin: Some(stdin_rx), stdout, stderr, resize: None };
        tokio::spawn(async move {
            let _ = stdin_tx.send(Bytes::from(stdin)).await;
        });
        let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        let user = user();
        let cx = ProcessContext { pod: ("default".into(), "web".into()), user: &user, files };
        let exit = run(&command, io, cx).await;
        let mut out = Vec::new();
        while let Ok(chunk) = stdout_rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        (exit, out)
    }

    #[tokio::test]
    async fn a_file_copied_in_with_tar_comes_back_out() {
        let files = PodFiles::default();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_cksum();
        builder.append_data(&mut header, "data.bin", &b"hello"[..]).unwrap_or_else(|e| panic!("{e}"));
        let archive = builder.into_inner().unwrap_or_else(|e| panic!("{e}"));

        let (exit, _) = run_with_stdin(&files, &["tar", "-xmf", "-", "-C", "/tmp"], archive).await;
        assert_eq!(exit, Exit::Success);
        assert_eq!(run_with_stdin(&files, &["test", "-d", "/tmp"], vec![]).await.0, Exit::Success);
        assert_eq!(run_with_stdin(&files, &["test", "-d", "/nope"], vec![]).await.0, Exit::Code(1));

        let (exit, out) = run_with_stdin(&files, &["tar", "cf", "-", "/tmp/data.bin"], vec![]).await;
        assert_eq!(exit, Exit::Success);
        let mut archive = tar::Archive::new(out.as_slice());
        let mut entry = archive.entries().unwrap_or_else(|e| panic!("{e}")).next().unwrap_or_else(|| panic!("empty"));
        let mut entry = entry.as_mut().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.path().map(|p| p.to_string_lossy().into_owned()).ok(), Some("tmp/data.bin".into()));
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(data, b"hello");
    }

    #[test]
    fn a_non_zero_exit_is_a_status_kubectl_turns_into_the_exit_code() {
        let status: serde_json::Value = serde_json::from_str(&Exit::Code(3).status_json()).unwrap_or_default();
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
    }
}
