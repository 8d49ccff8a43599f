//! What an exec, attach or port-forward asks for, from its query string: the command
//! and container policy may look at (`context.request.command`, `.container`) and the
//! audit event records.

use super::{RequestInfo, CREATE_WHATEVER_THE_METHOD};

/// The query of a streaming request, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRequest {
    /// The command and its arguments, joined by single spaces (`""` for attach and
    /// port-forward). Cedar has no ordered lists; `like "sh *"` matches on this.
    pub command: String,
    /// The container named in the query (`""`: the pod's default container).
    pub container: String,
    /// Port-forward: the ports of the query, comma-separated (websocket forwards name them).
    pub ports: String,
    pub tty: bool,
    pub stdin: bool,
}

impl StreamRequest {
    /// `Some` for exec, attach and portforward on pods; `None` for any other request.
    pub fn from_request(info: &RequestInfo, query: &str) -> Option<Self> {
        let RequestInfo::Resource(r) = info else { return None };
        if r.resource != "pods" || !CREATE_WHATEVER_THE_METHOD.contains(&r.subresource.as_str()) {
            return None;
        }
        let mut command = Vec::new();
        let mut ports = Vec::new();
        let mut stream = Self::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let on = value == "true" || value == "1";
            match key.as_ref() {
                "command" => command.push(value.into_owned()),
                "container" => stream.container = value.into_owned(),
                "ports" => ports.push(value.into_owned()),
                "tty" => stream.tty = on,
                "stdin" => stream.stdin = on,
                _ => {}
            }
        }
        stream.command = command.join(" ");
        stream.ports = ports.join(",");
        Some(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::parse;

    fn stream(method: &str, path: &str, query: &str) -> Option<StreamRequest> {
        let info = parse(method, path, query).ok()?;
        StreamRequest::from_request(&info, query)
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
