//! `metadata` of stored JSON objects: reading it safely from any client-sent shape, and
//! the fields the server owns (uid, creation timestamp, generated names) made as
//! kube-apiserver makes them.

use rand::Rng;
use serde_json::{Map, Value};
use std::time::SystemTime;

/// A string field of `metadata` (`None` when absent, empty or not a string).
pub fn text<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str().filter(|v| !v.is_empty())
}

/// `metadata.generation` (0 when absent).
pub fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap_or(0)
}

/// `metadata.finalizers`, as strings.
pub fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The object's `metadata` map, created when absent; `None` when the object is not an
/// object or its `metadata` is not one.
pub fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object.as_object_mut()?.entry("metadata").or_insert_with(|| Value::Object(Map::new())).as_object_mut()
}

/// Sets (or with `None` removes) a `metadata` field.
pub fn set(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(metadata) = metadata_mut(object) {
        match value {
            Some(value) => metadata.insert(field.to_owned(), value),
            None => metadata.remove(field),
        };
    }
}

/// A random UUID (version 4), as kube-apiserver's `uuid.NewUUID` gives every object.
pub fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Now, as `metav1.Time` serialises (RFC 3339, UTC, seconds).
pub fn now_timestamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `names.SimpleNameGenerator`: the prefix (cut to 58 characters) and five random
/// characters from an alphabet without vowels or look-alikes.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let prefix: String = prefix.chars().take(58).collect();
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect();
    format!("{prefix}{suffix}")
}

/// The message `validation.NameIsDNSSubdomain` gives a bad name.
pub const DNS_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_owned_fields_have_kube_apiserver_shapes() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4', "version 4: {uid}");
        assert_ne!(uid, new_uid());
        let name = generate_name("ar-");
        assert!(name.starts_with("ar-") && name.len() == 8, "{name}");
        assert_eq!(generate_name(&"x".repeat(70)).len(), 63);
        assert!(now_timestamp().ends_with('Z') && !now_timestamp().contains('.'));
        let mut object = json!({"kind": "AccessRequest"});
        set(&mut object, "name", Some(json!("a")));
        assert_eq!(text(&object, "name"), Some("a"));
        assert_eq!(metadata_mut(&mut json!({"metadata": 1})), None);
        assert!(finalizers(&json!({"metadata": {"finalizers": ["a", 1]}})) == ["a"]);
    }
}
