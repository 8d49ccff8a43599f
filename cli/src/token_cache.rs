//! Tokens kept between kubectl runs: one file per issuer, client and account (the
//! login hint, for people with several accounts at one provider), readable by the
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
    /// Whose tokens these are, so `logout --all` can revoke each at its issuer.
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub client_id: String,
    /// Whose they are (the ID token's `email`, else `sub`), for messages.
    #[serde(default)]
    pub user: String,
    /// The provider's clock minus this machine's when the tokens were issued, seconds.
    #[serde(default)]
    pub clock_skew: i64,
    /// The CA bundle the login trusted for the issuer, so `logout --all` can revoke at
    /// a provider with a private CA without being told it again.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Which tokens: one issuer, one OAuth client, one account.
#[derive(Debug, Clone)]
pub struct CacheKey {
    pub issuer: String,
    pub client_id: String,
    /// The `--login-hint` the tokens were requested with; empty when none.
    pub login_hint: String,
}

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("token cache {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token cache {path} is corrupt ({source}); the next login replaces it")]
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

    /// The cache file of `key`.
    pub fn file(&self, key: &CacheKey) -> PathBuf {
        let CacheKey { issuer, client_id, login_hint } = key;
        let digest = Sha256::digest(format!("{issuer}\n{client_id}\n{login_hint}").as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// Holds an exclusive lock for `key` until the guard drops, so that 20 kubectl
    /// processes started at once log in or refresh once: the others wait, then find the
    /// fresh token in the cache.
    pub fn lock(&self, key: &CacheKey) -> Result<CacheLock, CacheError> {
        let path = self.file(key).with_extension("lock");
        let io = |source| CacheError::Io { path: path.clone(), source };
        create_private_dir(&self.dir).map_err(io)?;
        let file = open_private_no_truncate(&path).map_err(io)?;
        file.lock().map_err(io)?;
        Ok(CacheLock { _file: file })
    }

    /// Every cache file.
    pub fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads one cache file.
    pub fn read(&self, path: &Path) -> Result<CachedTokens, CacheError> {
        let bytes = std::fs::read(path).map_err(|source| CacheError::Io { path: path.to_owned(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| CacheError::Corrupt { path: path.to_owned(), source })
    }

    /// The cached tokens, or `None` when nothing is cached.
    pub fn load(&self, key: &CacheKey) -> Result<Option<CachedTokens>, CacheError> {
        let path = self.file(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Io { path, source }),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| CacheError::Corrupt { path, source })
    }

    /// Stores tokens, creating the directory (0700) and the file (0600).
    pub fn store(&self, key: &CacheKey, tokens: &CachedTokens) -> Result<(), CacheError> {
        let path = self.file(key);
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

/// Released when dropped (the OS releases it if the process dies).
pub struct CacheLock {
    _file: std::fs::File,
}

#[cfg(unix)]
fn open_private_no_truncate(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)
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
            issuer: "https://idp".into(),
            client_id: "kubegate".into(),
            user: "alice@example.com".into(),
            clock_skew: 0,
            ca_file: None,
        }
    }

    fn key(issuer: &str, client_id: &str, login_hint: &str) -> CacheKey {
        CacheKey { issuer: issuer.into(), client_id: client_id.into(), login_hint: login_hint.into() }
    }

    #[test]
    fn stores_privately_and_reads_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = TokenCache::new(dir.path().join("kubegate"));
        let alice = key("https://idp", "kubegate", "");
        assert!(matches!(cache.load(&alice), Ok(None)));
        cache.store(&alice, &tokens()).unwrap_or_else(|e| panic!("{e}"));
        let loaded = cache.load(&alice).ok().flatten().map(|t| t.expires_at);
        assert_eq!(loaded, Some(42));
        assert!(matches!(cache.load(&key("https://idp", "other", "")), Ok(None)), "per client");
        assert!(matches!(cache.load(&key("https://idp", "kubegate", "admin@example.com")), Ok(None)), "per account");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&dir.path().join("kubegate")), 0o700);
        assert_eq!(mode(&cache.file(&alice)), 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cache = TokenCache::new(dir.path().to_owned());
        std::fs::write(cache.file(&key("i", "c", "")), b"{not json").unwrap_or_else(|e| panic!("{e}"));
        let err = cache.load(&key("i", "c", "")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("corrupt") && err.contains("next login replaces it"), "{err}");
    }
}
