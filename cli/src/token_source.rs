//! Where `exec-credential` gets a token, cheapest first: the cache while the token has
//! time left, then a refresh with the refresh token, and only then a login, which needs
//! a person (a terminal) unless the device flow is configured.
//!
//! Every failure on the way says what happened and falls through to the next source;
//! the last one's error is what the user reads (kubectl prints the plugin's stderr).

use crate::login::{interactive_login, warn_about_clock_skew, LoginSettings};
use crate::token_cache::{CachedTokens, TokenCache};
use std::time::{SystemTime, UNIX_EPOCH};

/// A cached ID token is used only while it has at least this long to live, so it does
/// not expire between kubectl reading it and the gateway checking it.
const MIN_REMAINING: u64 = 30;

/// Why no token could be had without a person, with the command that logs in for
/// exactly this kubeconfig entry (its issuer, client, CA, account and token cache), so
/// that running it as printed makes the next kubectl call work.
#[derive(Debug, thiserror::Error)]
#[error(
    "no valid token for {issuer} and no terminal to log in from; log in with:\n\n    {command}\n\n\
     (`--device` prints a code to enter in a browser on any machine that can reach the \
     identity provider; add `--device` to this kubeconfig entry's exec-credential arguments \
     to be asked that way automatically)"
)]
pub struct NeedsLogin {
    issuer: String,
    command: String,
}

impl NeedsLogin {
    fn new(settings: &LoginSettings) -> Self {
        Self { issuer: settings.issuer.clone(), command: login_command(settings) }
    }
}

/// `kubegate login ...` with the settings this exec-credential run was given, and the
/// cache directory it reads (kubeconfigs may set `KUBEGATE_CACHE_DIR` per user).
fn login_command(settings: &LoginSettings) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "kubegate".into());
    let mut words = Vec::new();
    if let Some(dir) = std::env::var_os("KUBEGATE_CACHE_DIR") {
        words.push(format!("KUBEGATE_CACHE_DIR={}", shell_word(&dir.to_string_lossy())));
    }
    words.extend([shell_word(&program), "login".into(), "--issuer".into(), shell_word(&settings.issuer)]);
    words.extend(["--client-id".into(), shell_word(&settings.client_id)]);
    if let Some(ca) = &settings.ca_file {
        let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
        words.extend(["--ca-file".into(), shell_word(&ca.to_string_lossy())]);
    }
    if let Some(hint) = &settings.login_hint {
        words.extend(["--login-hint".into(), shell_word(hint)]);
    }
    words.push("--device".into());
    words.join(" ")
}

/// `text` as one POSIX shell word: bare when that is safe, else single-quoted.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// One account's tokens at one provider, as kubectl's exec plugin needs them.
pub struct TokenSource<'a> {
    settings: &'a LoginSettings,
    cache: TokenCache,
}

impl<'a> TokenSource<'a> {
    pub fn new(settings: &'a LoginSettings, cache: TokenCache) -> Self {
        Self { settings, cache }
    }

    /// A token for kubectl. `can_prompt`: a person is at a terminal to log in.
    pub async fn token(&self, can_prompt: bool) -> anyhow::Result<CachedTokens> {
        let key = self.settings.cache_key();
        // Parallel kubectl runs queue here: one refreshes or logs in, the rest find its token.
        let _lock = self.cache.lock(&key)?;
        let cached = self.cache.load(&key).unwrap_or_else(|e| {
            eprintln!("kubegate: {e}");
            None
        });
        if let Some(tokens) = &cached {
            if tokens.expires_at > now() + MIN_REMAINING {
                return Ok(tokens.clone());
            }
            if let Some(refreshed) = self.refresh(tokens).await {
                // The cached token itself comes back when the provider is unreachable.
                if refreshed.id_token != tokens.id_token {
                    self.cache.store(&key, &refreshed)?;
                }
                return Ok(refreshed);
            }
        }
        if !can_prompt && !self.settings.device {
            anyhow::bail!(NeedsLogin::new(self.settings));
        }
        self.login().await
    }

    /// Always a new login (`kubegate login`), replacing whatever is cached.
    pub async fn login(&self) -> anyhow::Result<CachedTokens> {
        let tokens = interactive_login(self.settings).await?;
        self.cache.store(&self.settings.cache_key(), &tokens)?;
        Ok(tokens)
    }

    /// A refreshed token; or, when the provider cannot be reached, the cached token if it
    /// has not quite expired; `None` (after saying why) when a login is needed.
    async fn refresh(&self, cached: &CachedTokens) -> Option<CachedTokens> {
        let refresh_token = cached.refresh_token.as_ref()?;
        let refreshed = async { self.settings.client().await?.refresh(refresh_token).await.map_err(Into::into) };
        let error: anyhow::Error = match refreshed.await {
            Ok(tokens) => {
                warn_about_clock_skew(&tokens);
                return Some(tokens);
            }
            Err(error) => error,
        };
        let oidc = error.chain().find_map(|e| e.downcast_ref::<crate::oidc_client::OidcError>());
        if oidc.is_some_and(|e| e.is_unreachable()) && cached.expires_at > now() {
            eprintln!(
                "kubegate: warning: {error:#}; using the cached token, which expires in {} s",
                cached.expires_at - now()
            );
            return Some(cached.clone());
        }
        if oidc.is_some_and(|e| e.is_invalid_grant()) {
            eprintln!(
                "kubegate: your session at {} has ended (the refresh token expired or was revoked); log in again",
                self.settings.issuer
            );
        } else {
            eprintln!("kubegate: refreshing the token failed: {error:#}");
        }
        None
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_words_survive_the_shell() {
        assert_eq!(super::shell_word("https://idp.example.com:8443/realms/x"), "https://idp.example.com:8443/realms/x");
        assert_eq!(super::shell_word("/home/a b/ca.pem"), "'/home/a b/ca.pem'");
        assert_eq!(super::shell_word("it's"), "'it'\\''s'");
        assert_eq!(super::shell_word(""), "''");
    }
}
