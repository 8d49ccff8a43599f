//! Errors as an operator needs to read them.

/// The error and its causes in one line (`error sending request ...: invalid peer
/// certificate: UnknownIssuer`): reqwest's own message never says *why* a connection or
/// a TLS handshake failed. A cause already contained in the text is not repeated.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = inner.source();
    }
    text
}
