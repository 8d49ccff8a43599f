//! The Kubernetes `Status` body every kubegate refusal carries, so kubectl prints
//! the message (`error: You must be logged in to the server (Unauthorized)` alone
//! tells a user nothing about what to do).

use serde::Serialize;

/// A `meta.k8s.io/v1` `Status` with `status: Failure`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Serialize)]
struct Empty {}

impl<'a> Status<'a> {
    /// A failure with HTTP `code`; the reason follows from the code the way
    /// kube-apiserver names it.
    pub fn failure(code: u16, message: &'a str) -> Self {
        Self {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message,
            reason: reason_for(code),
            code,
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_shape_kubectl_parses() {
        let body: serde_json::Value =
            serde_json::from_str(&Status::failure(401, "token expired: run `kubegate login`").to_json())
                .unwrap_or_default();
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(body["code"], 401);
        assert_eq!(body["message"], "token expired: run `kubegate login`");
    }

    #[test]
    fn escapes_quotes_in_messages() {
        let json = Status::failure(403, "policy \"no-exec\" says no").to_json();
        let body: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(body["message"], "policy \"no-exec\" says no");
    }
}
