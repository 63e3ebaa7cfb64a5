//! The JSON-RPC 2.0 envelope: parsing requests and shaping responses, with no I/O.
//!
//! Batches are answered element by element as the specification asks; notifications (requests
//! without an `id`) get no response. Everything a client sends gets either a response or a
//! deliberate silence, never a dropped connection.

use serde::Serialize;
use serde_json::{Value, json};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal JSON-RPC error.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    /// One of the codes above, or a method-specific one.
    pub code: i64,
    /// A sentence for the user.
    pub message: String,
}

impl RpcError {
    /// An error with the given code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// One well-formed request of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` for a notification, which gets no response.
    pub id: Option<Value>,
    /// The method name, such as `server.info`.
    pub method: String,
    /// The params, `Value::Null` when absent.
    pub params: Value,
}

/// One element of a message after parsing: a request to run, or an error to answer at once.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A request to dispatch.
    Call(Request),
    /// A malformed element; answer with this error and id (null when unknown).
    Invalid {
        /// The id, when the element had a usable one.
        id: Value,
        /// What was wrong.
        error: RpcError,
    },
}

/// Whether a message was one request or a batch; the answer must have the same shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A single request object.
    Single(Incoming),
    /// A batch array (never empty: an empty batch is an invalid request).
    Batch(Vec<Incoming>),
}

/// Parses one WebSocket text message.
pub fn parse(text: &str) -> Message {
    match serde_json::from_str::<Value>(text) {
        Err(e) => Message::Single(Incoming::Invalid {
            id: Value::Null,
            error: RpcError::new(PARSE_ERROR, format!("Parse error: {e}")),
        }),
        Ok(Value::Array(items)) if items.is_empty() => Message::Single(Incoming::Invalid {
            id: Value::Null,
            error: RpcError::new(INVALID_REQUEST, "Invalid request: empty batch"),
        }),
        Ok(Value::Array(items)) => Message::Batch(items.into_iter().map(parse_one).collect()),
        Ok(other) => Message::Single(parse_one(other)),
    }
}

fn parse_one(value: Value) -> Incoming {
    let Value::Object(mut obj) = value else {
        return invalid(Value::Null, "a request must be a JSON object");
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::Number(_) | Value::String(_))) => Some(id),
        Some(_) => return invalid(Value::Null, "'id' must be a string, a number or null"),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(answer_id, "'jsonrpc' must be \"2.0\"");
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return invalid(answer_id, "'method' must be a string"),
    };
    let params = match obj.remove("params") {
        None => Value::Null,
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return invalid(answer_id, "'params' must be an object or an array"),
    };
    Incoming::Call(Request { id, method, params })
}

fn invalid(id: Value, why: &str) -> Incoming {
    Incoming::Invalid {
        id,
        error: RpcError::new(INVALID_REQUEST, format!("Invalid request: {why}")),
    }
}

/// A success response.
pub fn result(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response.
pub fn error(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Incoming {
        match parse(text) {
            Message::Single(i) => i,
            Message::Batch(b) => panic!("expected one request, got a batch of {}", b.len()),
        }
    }

    fn error_code(i: &Incoming) -> i64 {
        match i {
            Incoming::Invalid { error, .. } => error.code,
            Incoming::Call(r) => panic!("expected an error, got a call to {}", r.method),
        }
    }

    #[test]
    fn parses_a_request_with_and_without_params() {
        let i = single(r#"{"jsonrpc":"2.0","method":"server.info","id":7}"#);
        assert_eq!(
            i,
            Incoming::Call(Request {
                id: Some(json!(7)),
                method: "server.info".into(),
                params: Value::Null
            })
        );
        let i = single(r#"{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":"x"}"#);
        let Incoming::Call(r) = i else {
            panic!("not a call")
        };
        assert_eq!(r.params, json!({"a": 1}));
        assert_eq!(r.id, Some(json!("x")));
    }

    #[test]
    fn a_notification_has_no_id() {
        let Incoming::Call(r) = single(r#"{"jsonrpc":"2.0","method":"m"}"#) else {
            panic!("not a call")
        };
        assert_eq!(r.id, None);
    }

    #[test]
    fn malformed_input_gets_the_right_codes() {
        assert_eq!(error_code(&single("{not json")), PARSE_ERROR);
        assert_eq!(error_code(&single("[]")), INVALID_REQUEST);
        assert_eq!(error_code(&single("42")), INVALID_REQUEST);
        assert_eq!(
            error_code(&single(r#"{"method":"m","id":1}"#)),
            INVALID_REQUEST
        );
        assert_eq!(
            error_code(&single(r#"{"jsonrpc":"2.0","method":5,"id":1}"#)),
            INVALID_REQUEST
        );
        assert_eq!(
            error_code(&single(
                r#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#
            )),
            INVALID_REQUEST
        );
        assert_eq!(
            error_code(&single(r#"{"jsonrpc":"2.0","method":"m","id":{"a":1}}"#)),
            INVALID_REQUEST
        );
    }

    #[test]
    fn invalid_requests_keep_their_id() {
        let Incoming::Invalid { id, .. } = single(r#"{"jsonrpc":"1.0","method":"m","id":9}"#)
        else {
            panic!("expected invalid")
        };
        assert_eq!(id, json!(9));
    }

    #[test]
    fn batches_parse_element_by_element() {
        let Message::Batch(items) =
            parse(r#"[{"jsonrpc":"2.0","method":"a","id":1}, 5, {"jsonrpc":"2.0","method":"b"}]"#)
        else {
            panic!("expected a batch")
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0], Incoming::Call(_)));
        assert_eq!(error_code(&items[1]), INVALID_REQUEST);
        assert!(matches!(&items[2], Incoming::Call(r) if r.id.is_none()));
    }

    #[test]
    fn responses_have_the_envelope() {
        assert_eq!(
            result(json!(1), json!("ok")),
            json!({"jsonrpc":"2.0","id":1,"result":"ok"})
        );
        let e = RpcError::new(METHOD_NOT_FOUND, "Method not found: x");
        assert_eq!(
            error(json!(null), &e),
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32601,"message":"Method not found: x"}})
        );
    }
}
