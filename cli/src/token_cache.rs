//! Tokens kept between kubectl runs: one file per issuer and client, readable by the
//! user alone (directory 0700, files 0600), replaced atomically so a reader never sees
//! half a file.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a login or refresh left behind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedTokens {
    /// The OpenID Connect ID token kubectl presents to the gateway.
    pub id_token: Secret,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// For getting a new ID token without a browser.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("token cache {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token cache {path} is corrupt ({source}); run `kubegate login`")]
    Corrupt { path: PathBuf, source: serde_json::Error },
}

/// The token cache directory.
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$KUBEGATE_CACHE_DIR`, else `$XDG_CACHE_HOME/kubegate`, else `~/.cache/kubegate`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("KUBEGATE_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache"));
        base.join("kubegate")
    }

    fn path(&self, issuer: &str, client_id: &str) -> PathBuf {
        let digest = Sha256::digest(format!("{issuer}\n{client_id}").as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The cached tokens, or `None` when nothing is cached.
    pub fn load(&self, issuer: &str, client_id: &str) -> Result<Option<CachedTokens>, CacheError> {
        let path = self.path(issuer, client_id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| CacheError::Corrupt { path, source })
    }

    /// Stores tokens, creating the directory (0700) and the file (0600).
    pub fn store(&self, issuer: &str, client_id: &str, tokens: &CachedTokens) -> Result<(), CacheError> {
        let path = self.path(issuer, client_id);
        let io = |source| CacheError::Io { path: path.clone(), source };
        create_private_dir(&self.dir).map_err(io)?;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut file = open_private(&tmp).map_err(io)?;
        let json = serde_json::to_vec(tokens).unwrap_or_default();
        file.write_all(&json).and_then(|()| file.sync_all()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> CachedTokens {
        CachedTokens {
            id_token: Secret::new("id".into()),
            expires_at: 42,
            refresh_token: Some(Secret::new("r".into())),
        }
    }

    #[test]
    fn stores_privately_and_reads_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = TokenCache::new(dir.path().join("kubegate"));
        assert!(matches!(cache.load("https://idp", "kubegate"), Ok(None)));
        cache.store("https://idp", "kubegate", &tokens()).unwrap_or_else(|e| panic!("{e}"));
        let loaded = cache.load("https://idp", "kubegate").ok().flatten().map(|t| t.expires_at);
        assert_eq!(loaded, Some(42));
        assert!(matches!(cache.load("https://idp", "other"), Ok(None)), "per client");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&dir.path().join("kubegate")), 0o700);
        assert_eq!(mode(&cache.path("https://idp", "kubegate")), 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = TokenCache::new(dir.path().to_owned());
        std::fs::write(cache.path("i", "c"), b"{not json").unwrap_or_else(|e| panic!("{e}"));
        let err = cache.load("i", "c").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("corrupt") && err.contains("kubegate login"), "{err}");
    }
}
