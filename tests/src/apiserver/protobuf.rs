//! The Kubernetes protobuf wire format, for the one request kubectl sends in it that the
//! stand-in must read: a `SelfSubjectAccessReview` (`kubectl auth can-i`).
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` whose `raw` field holds
//! the object (k8s.io/apimachinery/pkg/runtime/serializer/protobuf).

use prost::Message;

const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(bytes = "vec", tag = "2")]
    raw: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "2")]
    spec: Option<Spec>,
}

#[derive(Clone, PartialEq, Message)]
struct Spec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

/// The review as the JSON the rest of the stand-in reads, or `None` when the body is
/// not a protobuf-encoded object.
pub fn self_subject_access_review_json(body: &[u8]) -> Option<serde_json::Value> {
    let unknown = Unknown::decode(body.strip_prefix(MAGIC)?).ok()?;
    let review = SelfSubjectAccessReview::decode(unknown.raw.as_slice()).ok()?;
    let spec = review.spec.unwrap_or_default();
    let spec = match (spec.resource_attributes, spec.non_resource_attributes) {
        (Some(r), _) => serde_json::json!({"resourceAttributes": {
            "namespace": r.namespace, "verb": r.verb, "group": r.group, "version": r.version,
            "resource": r.resource, "subresource": r.subresource, "name": r.name}}),
        (None, Some(n)) => serde_json::json!({"nonResourceAttributes": {"path": n.path, "verb": n.verb}}),
        (None, None) => serde_json::json!({}),
    };
    Some(
        serde_json::json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {}, "spec": spec}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_resource_review() {
        let review = SelfSubjectAccessReview {
            spec: Some(Spec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: "default".into(),
                    verb: "list".into(),
                    resource: "pods".into(),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
        };
        let mut body = MAGIC.to_vec();
        body.extend(Unknown { raw: review.encode_to_vec() }.encode_to_vec());
        let json = self_subject_access_review_json(&body).unwrap_or_default();
        assert_eq!(json["spec"]["resourceAttributes"]["verb"], "list");
        assert_eq!(json["spec"]["resourceAttributes"]["namespace"], "default");
        assert!(self_subject_access_review_json(b"{}").is_none());
    }
}
