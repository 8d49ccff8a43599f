//! Applying a PATCH body to a stored object, by its content type, as kube-apiserver does
//! for a custom resource: `application/merge-patch+json` (RFC 7386) and
//! `application/json-patch+json` (RFC 6902). Strategic merge patches are not supported
//! for custom resources at all, and server-side apply (`application/apply-patch+yaml`)
//! is not implemented by the stand-in: both are the 415 kube-apiserver gives a patch
//! type it does not accept, naming the two the stand-in does.

use super::api_errors::ApiError;
use serde_json::Value;

/// The patch types accepted, as the 415 lists them.
pub const ACCEPTED: &[&str] = &["application/json-patch+json", "application/merge-patch+json"];

/// The most operations a JSON patch may have (kube-apiserver's `maxJSONPatchOperations`).
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A patch, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
}

impl PatchType {
    /// The patch type of a `Content-Type` (parameters ignored), or the 415.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let media = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            _ => Err(ApiError::unsupported_media_type(ACCEPTED)),
        }
    }
}

/// RFC 7386: `null` removes a member, an object merges into an object, anything else
/// replaces.
pub fn merge(target: &Value, patch: &Value) -> Value {
    match (target, patch) {
        (_, Value::Object(patch)) => {
            let mut result = match target {
                Value::Object(target) => target.clone(),
                _ => serde_json::Map::new(),
            };
            for (key, value) in patch {
                if value.is_null() {
                    result.remove(key);
                } else {
                    let merged = merge(result.get(key).unwrap_or(&Value::Null), value);
                    result.insert(key.clone(), merged);
                }
            }
            Value::Object(result)
        }
        (_, other) => other.clone(),
    }
}

/// `object` with the patch `body` of `kind` applied, or kube-apiserver's refusal.
pub fn apply(kind: PatchType, object: &Value, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body).map_err(|_| ApiError::bad_request("Invalid JSON Patch"))?;
            let patched = merge(object, &patch);
            if !patched.is_object() {
                return Err(ApiError::bad_request("Invalid JSON Patch"));
            }
            Ok(patched)
        }
        PatchType::Json => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            if patch.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::too_large(&format!(
                    "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
                    patch.0.len()
                )));
            }
            let mut patched = object.clone();
            json_patch::patch(&mut patched, &patch).map_err(|e| ApiError::patch_does_not_apply(&e.to_string()))?;
            Ok(patched)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"m": 1}});
        assert_eq!(merge(&target, &patch), json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"m": 1}}));
    }

    #[test]
    fn json_patches_apply_or_are_refused_as_kube_apiserver_refuses_them() -> Result<(), ApiError> {
        let object = json!({"spec": {"levels": ["oncall"]}, "status": {"phase": "Pending"}});
        let patch = br#"[{"op":"test","path":"/status/phase","value":"Pending"},
                         {"op":"replace","path":"/status/phase","value":"Approved"},
                         {"op":"add","path":"/spec/levels/-","value":"admin"},
                         {"op":"remove","path":"/spec/levels/0"}]"#;
        let patched = apply(PatchType::Json, &object, patch)?;
        assert_eq!(patched, json!({"spec": {"levels": ["admin"]}, "status": {"phase": "Approved"}}));
        let failed = apply(PatchType::Json, &object, br#"[{"op":"test","path":"/status/phase","value":"Denied"}]"#);
        assert_eq!(failed.as_ref().map_err(|e| (e.code, e.reason)).err(), Some((422, "Invalid")));
        let garbage = apply(PatchType::Json, &object, b"{}");
        assert_eq!(garbage.map_err(|e| e.code).err(), Some(400));
        assert_eq!(apply(PatchType::Merge, &object, b"[1]").map_err(|e| e.code).err(), Some(400));
        assert_eq!(PatchType::from_content_type(Some("application/apply-patch+yaml")).map_err(|e| e.code), Err(415));
        assert_eq!(
            PatchType::from_content_type(Some("application/merge-patch+json; charset=utf-8")),
            Ok(PatchType::Merge)
        );
        Ok(())
    }
}
