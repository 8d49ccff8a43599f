//! What an exec, attach or port-forward asks for, from its query: the command and
//! container policy may look at (`context.request.command`, `.container`) and the audit
//! event records, read as kube-apiserver converts the query into its options.

use super::{Query, RequestInfo, CREATE_WHATEVER_THE_METHOD};

/// The query of a streaming request, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// Every `command` value, joined by single spaces (`""` for attach and
    /// port-forward). Cedar has no ordered lists; `like "sh *"` matches on this.
    pub command: String,
    /// The first `container` value, as kube-apiserver takes it (`""`: the pod's default).
    pub container: String,
    /// Port-forward: every `ports` value, comma-separated.
    pub ports: String,
    /// kube-apiserver's bool conversion: `?tty` and `?tty=yes` are true.
    pub tty: bool,
    pub stdin: bool,
}

impl StreamRequest {
    /// True for exec, attach and portforward on pods.
    pub fn applies_to(info: &RequestInfo) -> bool {
        matches!(info, RequestInfo::Resource(r)
            if r.resource == "pods" && CREATE_WHATEVER_THE_METHOD.contains(&r.subresource.as_str()))
    }

    /// `Some` for exec, attach and portforward on pods; `None` for any other request.
    pub fn from_request(info: &RequestInfo, query: &Query) -> Option<Self> {
        Self::applies_to(info).then(|| Self {
            command: query.all("command").collect::<Vec<_>>().join(" "),
            container: query.first("container").unwrap_or_default().to_owned(),
            ports: query.all("ports").collect::<Vec<_>>().join(","),
            tty: query.flag("tty"),
            stdin: query.flag("stdin"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::KubeRequest;

    fn stream(method: &str, path: &str, query: &str) -> Option<StreamRequest> {
        KubeRequest::read(method, &format!("{path}?{query}")).ok()?.stream
    }

    #[test]
    fn exec_command_and_container_are_decoded_in_order() {
        let query = "command=sh&command=-c&command=echo+hi%20there&container=app&stdin=true&tty=true";
        let exec = stream("GET", "/api/v1/namespaces/d/pods/web/exec", query);
        assert_eq!(
            exec,
            Some(StreamRequest {
                command: "sh -c echo hi there".into(),
                container: "app".into(),
                ports: String::new(),
                tty: true,
                stdin: true
            })
        );
    }

    /// Attack: policy reads one command or container while the API server runs another
    /// (kube-apiserver takes the first `container`, and drops pairs with `;` or a bad escape).
    #[test]
    fn exec_query_is_read_as_kube_apiserver_reads_it() {
        let read = |query: &str| stream("POST", "/api/v1/namespaces/d/pods/web/exec", query).unwrap_or_default();
        assert_eq!(read("container=safe&container=app").container, "safe");
        assert_eq!(read("command=ls+x;&command=sh").command, "sh");
        assert_eq!(read("command=x%ZZ&command=sh").command, "sh");
        let flags = read("tty&stdin=yes");
        assert!(flags.tty && flags.stdin);
        assert!(!read("tty=0&stdin=False").tty);
    }

    #[test]
    fn port_forward_ports_are_kept() {
        let forward = stream("GET", "/api/v1/namespaces/d/pods/web/portforward", "ports=8080&ports=9090");
        assert_eq!(forward.map(|f| f.ports), Some("8080,9090".into()));
    }

    #[test]
    fn other_requests_have_none() {
        assert_eq!(stream("GET", "/api/v1/namespaces/d/pods/web/log", "command=x"), None);
        assert_eq!(stream("POST", "/api/v1/namespaces/d/services/web/exec", "command=x"), None);
    }
}
