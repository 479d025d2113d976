//! The `connection` document a backend is told about a connection, the
//! same in every call of every plugin: `{"id","remote_addr","path",
//! "query_string","headers":{<the forwarded handshake headers, lower-case
//! names>},"data":{<what the backend attached>}}`.

use serde::Serialize;
use serde_json::{Map, Value};

/// What the backend is told about the connection.
#[derive(Serialize)]
pub struct ConnectionInfo<'a> {
    pub id: Option<u64>,
    pub remote_addr: Option<&'a Value>,
    pub path: Option<&'a Value>,
    pub query_string: Option<&'a Value>,
    /// The forwarded handshake headers only.
    pub headers: Map<String, Value>,
    /// What the backend attached to the connection (`set`).
    pub data: &'a Map<String, Value>,
}

impl<'a> ConnectionInfo<'a> {
    /// From a connection's scope and its state; `forward` are lower-case
    /// header names.
    pub fn new(
        scope: &'a Map<String, Value>,
        data: &'a Map<String, Value>,
        forward: &[String],
    ) -> Self {
        let headers = scope
            .get("headers")
            .and_then(Value::as_object)
            .map(|all| {
                forward
                    .iter()
                    .filter_map(|name| Some((name.clone(), all.get(name)?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        ConnectionInfo {
            id: scope.get("connection_id").and_then(Value::as_u64),
            remote_addr: scope.get("remote_addr"),
            path: scope.get("path"),
            query_string: scope.get("query_string"),
            headers,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forwarded_headers_are_told() {
        let scope: Map<String, Value> = serde_json::from_str(
            r#"{"connection_id":7,"remote_addr":"127.0.0.1:5","path":"/ws","query_string":"a=1",
            "headers":{"cookie":"s=1","authorization":"Bearer x"}}"#,
        )
        .unwrap();
        let data = Map::new();
        let info = ConnectionInfo::new(&scope, &data, &["cookie".to_owned()]);
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(
            text,
            r#"{"id":7,"remote_addr":"127.0.0.1:5","path":"/ws","query_string":"a=1","headers":{"cookie":"s=1"},"data":{}}"#
        );
    }
}
