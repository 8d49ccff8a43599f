//! Editing the user's kubeconfig: add or replace one cluster, user and context by name,
//! leaving every other entry (and unknown field) as it was.
//!
//! Which file: `--kubeconfig`, else the first existing file of `KUBECONFIG` (the last
//! one if none exists yet), else `~/.kube/config`, as kubectl chooses where new entries go.
//! A file that is not a readable kubeconfig is refused with its line, and not touched.

use serde_yaml::{Mapping, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the kubeconfig could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}{}: {reason}; not changed", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid { path: PathBuf, line: Option<usize>, reason: String },
}

/// One kubeconfig file, parsed.
pub struct KubeconfigFile {
    path: PathBuf,
    doc: Mapping,
}

/// The file new entries go to.
pub fn target_file(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let files: Vec<PathBuf> = std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect();
        if let Some(existing) = files.iter().find(|p| p.exists()).or(files.last()) {
            return existing.clone();
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".kube").join("config")
}

impl KubeconfigFile {
    /// Reads `path`; a missing file is an empty kubeconfig.
    pub fn load(path: &Path) -> Result<Self, KubeconfigError> {
        let invalid = |line, reason: String| KubeconfigError::Invalid { path: path.to_owned(), line, reason };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(KubeconfigError::Io { path: path.to_owned(), source }),
        };
        let doc = match serde_yaml::from_str::<Value>(&text) {
            Ok(Value::Mapping(doc)) => doc,
            Ok(Value::Null) => Mapping::new(),
            Ok(_) => return Err(invalid(None, "not a kubeconfig (expected a mapping at the top)".into())),
            Err(e) => return Err(invalid(e.location().map(|l| l.line()), e.to_string())),
        };
        for section in ["clusters", "users", "contexts"] {
            if !matches!(doc.get(section), None | Some(Value::Null) | Some(Value::Sequence(_))) {
                return Err(invalid(None, format!("`{section}` is not a list")));
            }
        }
        Ok(Self { path: path.to_owned(), doc })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds `clusters[name].cluster = cluster`, replacing an entry of that name.
    pub fn set_cluster(&mut self, name: &str, cluster: Value) {
        self.upsert("clusters", "cluster", name, cluster);
    }

    pub fn set_user(&mut self, name: &str, user: Value) {
        self.upsert("users", "user", name, user);
    }

    pub fn set_context(&mut self, name: &str, cluster: &str, user: &str) {
        let context = Mapping::from_iter([("cluster".into(), cluster.into()), ("user".into(), user.into())]);
        self.upsert("contexts", "context", name, Value::Mapping(context));
    }

    pub fn set_current_context(&mut self, name: &str) {
        self.doc.insert("current-context".into(), name.into());
    }

    fn upsert(&mut self, section: &str, field: &str, name: &str, value: Value) {
        self.doc.entry("apiVersion".into()).or_insert_with(|| "v1".into());
        self.doc.entry("kind".into()).or_insert_with(|| "Config".into());
        let entry = Value::Mapping(Mapping::from_iter([("name".into(), name.into()), (field.into(), value)]));
        let list = self.doc.entry(section.into()).or_insert_with(|| Value::Sequence(Vec::new()));
        if !list.is_sequence() {
            *list = Value::Sequence(Vec::new());
        }
        let Value::Sequence(entries) = list else { return };
        match entries.iter_mut().find(|e| e.get("name").and_then(Value::as_str) == Some(name)) {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
    }

    /// Writes the file atomically, readable by the user alone (it may hold credentials).
    pub fn save(&self) -> Result<(), KubeconfigError> {
        let io = |source| KubeconfigError::Io { path: self.path.clone(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_yaml::to_string(&self.doc).map_err(|e| KubeconfigError::Invalid {
            path: self.path.clone(),
            line: None,
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension(format!("kubegate-tmp.{}", std::process::id()));
        let mut file = open_private(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: 'https://prod'}\n\
        users:\n- name: prod-admin\n  user: {token: abc}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod-admin}\n\
        current-context: prod\npreferences: {colors: true}\n";

    fn tmp_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    #[test]
    fn adds_entries_and_keeps_the_others() {
        let (_dir, path) = tmp_file(EXISTING);
        let mut config = KubeconfigFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        config.set_cluster("gw", serde_yaml::from_str("server: https://gw").unwrap_or_default());
        config.set_user("gw", serde_yaml::from_str("exec: {command: kubegate}").unwrap_or_default());
        config.set_context("gw", "gw", "gw");
        config.set_current_context("gw");
        config.save().unwrap_or_else(|e| panic!("{e}"));
        let again: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_default();
        assert_eq!(again["clusters"][0]["cluster"]["server"], "https://prod");
        assert_eq!(again["clusters"][1]["cluster"]["server"], "https://gw");
        assert_eq!(again["users"][0]["user"]["token"], "abc");
        assert_eq!(again["preferences"]["colors"], true, "unknown fields survive");
        assert_eq!(again["current-context"], "gw");
    }

    #[test]
    fn replaces_an_entry_of_the_same_name() {
        let (_dir, path) = tmp_file(EXISTING);
        let mut config = KubeconfigFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        config.set_cluster("prod", serde_yaml::from_str("server: https://new").unwrap_or_default());
        let Some(Value::Sequence(clusters)) = config.doc.get("clusters") else { panic!("no clusters") };
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0]["cluster"]["server"], "https://new");
    }

    #[test]
    fn a_broken_file_is_refused_with_its_line_and_left_alone() {
        let broken = "apiVersion: v1\nclusters:\n- name: a\n  cluster: [unclosed\n";
        let (_dir, path) = tmp_file(broken);
        let err = KubeconfigFile::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("line") && err.contains("not changed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), broken);
        let (_dir, path) = tmp_file("clusters: {a: 1}\n");
        let err = KubeconfigFile::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("`clusters` is not a list"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_empty_kubeconfig() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub").join("config");
        let mut config = KubeconfigFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        config.set_context("gw", "gw", "gw");
        config.save().unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode, 0o600);
    }
}
