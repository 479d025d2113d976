//! The registration of plugin-api 1.4 (`handle`, `inline`, the handler's
//! arguments and answers, `reply`) and the deprecated methods of 1.0-1.3
//! beside it, each call run the way the host runs it.

use abi_stable::std_types::RString;
use serde_json::{json, Value};

use crate::{
    abi::{self, Call, CallOutcome, MODE_INLINE, MODE_POOLED},
    prelude::*,
};

/// What one call of handler `n` did: the effects as (kind, target, body),
/// or the text of a failed call.
fn call(plugin: &Plugin, n: usize, frame: &str) -> Result<Vec<(u32, String, Value)>, String> {
    let request: Value = serde_json::from_str(frame).unwrap();
    let kind = request["type"].as_str().unwrap_or_default().to_owned();
    let id = request["id"].to_string();
    let data = request
        .get("data")
        .map(Value::to_string)
        .unwrap_or_default();
    let scope = json!({"connection_id": 7, "__state__": {"user": "ada"}}).to_string();
    let scope = scope.replace("__state__", abi::SCOPE_STATE);
    let call = Call {
        frame: frame.into(),
        id: id.as_str().into(),
        kind: kind.as_str().into(),
        data: data.as_str().into(),
        scope: scope.as_str().into(),
    };
    match plugin.run(n, &call) {
        CallOutcome::Done(effects) => Ok(effects
            .into_iter()
            .map(|e| {
                let body = serde_json::from_str(e.body.as_str()).unwrap_or(Value::Null);
                (e.kind, e.target.into_string(), body)
            })
            .collect()),
        CallOutcome::Failed(error) => Err(RString::into_string(error)),
        CallOutcome::Panicked(message) => panic!("{message}"),
    }
}

/// The messages a call sent to its caller.
fn sent(plugin: &Plugin, n: usize, frame: &str) -> Vec<Value> {
    call(plugin, n, frame)
        .unwrap()
        .into_iter()
        .filter(|(kind, _, _)| *kind == abi::EFFECT_SEND)
        .map(|(_, _, body)| body)
        .collect()
}

fn modes(plugin: &Plugin) -> Vec<u8> {
    plugin.declared().handlers.iter().map(|h| h.mode).collect()
}

#[derive(serde::Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(serde::Serialize)]
struct Sum {
    sum: i64,
}

fn add(Data(input): Data<Add>) -> Result<Json<Sum>, Refusal> {
    match input.a.checked_add(input.b) {
        Some(sum) => Ok(Json(Sum { sum })),
        None => refuse("Too large."),
    }
}

fn pong(req: &Request, conn: &mut Connection) {
    let _ = conn.send_success(req.id(), "pong", req.data().cloned());
}

fn join(req: &Request, Data(group): Data<String>, conn: &mut Connection) -> HandlerResult {
    conn.add_to_group(&group);
    conn.reply(req, json!({ "group": group }));
    Ok(())
}

#[test]
fn the_arguments_are_what_the_handler_names() {
    let plugin = Plugin::new("t", "1")
        .handle("add", add)
        .inline()
        .handle("ping", pong)
        .handle("join", join)
        .handle(
            "who",
            |conn: &mut Connection, req: &Request| -> HandlerResult {
                let user: Option<String> = req.get("user")?;
                conn.reply(req, json!({ "user": user }));
                Ok(())
            },
        )
        .inline();
    assert_eq!(
        modes(&plugin),
        [MODE_INLINE, MODE_POOLED, MODE_POOLED, MODE_INLINE]
    );
    assert_eq!(
        sent(&plugin, 0, r#"{"id":1,"type":"add","data":{"a":1,"b":2}}"#),
        [json!({"id":1,"type":"add","data":{"sum":3}})]
    );
    assert_eq!(
        sent(&plugin, 1, r#"{"id":"p","type":"ping","data":{"x":1}}"#),
        [json!({"id":"p","type":"pong","data":{"x":1}})]
    );
    let joined = call(&plugin, 2, r#"{"id":2,"type":"join","data":"lobby"}"#).unwrap();
    assert_eq!(
        joined,
        [
            (abi::EFFECT_JOIN, "lobby".to_owned(), Value::Null),
            (
                abi::EFFECT_SEND,
                String::new(),
                json!({"id":2,"type":"join","data":{"group":"lobby"}})
            ),
        ]
    );
    assert_eq!(
        sent(&plugin, 3, r#"{"id":3,"type":"who"}"#),
        [json!({"id":3,"type":"who","data":{"user":"ada"}})]
    );
}

#[test]
fn data_that_does_not_fit_is_answered_without_running_the_handler() {
    let plugin = Plugin::new("t", "1").handle("add", add);
    assert_eq!(
        sent(
            &plugin,
            0,
            r#"{"id":1,"type":"add","data":{"a":1,"b":"2"}}"#
        ),
        [json!({"id":1,"type":"add",
                "error":"Invalid data: b: invalid type: string \"2\", expected i64"})]
    );
    assert_eq!(
        sent(&plugin, 0, r#"{"id":2,"type":"add"}"#),
        [json!({"id":2,"type":"add","error":"Invalid data: data is required"})]
    );
    // A refusal: the error reply, not a failed call.
    let max = i64::MAX;
    assert_eq!(
        sent(
            &plugin,
            0,
            &format!(r#"{{"id":3,"type":"add","data":{{"a":{max},"b":1}}}}"#)
        ),
        [json!({"id":3,"type":"add","error":"Too large."})]
    );
}

/// A guard before the data is looked at, and texts of the handler's own.
#[test]
fn a_handler_taking_the_decoding_result_chooses_what_to_answer() {
    let plugin = Plugin::new("t", "1").handle(
        "add",
        |req: &Request, input: Result<Data<Add>, DataError>| -> Result<Value, HandlerError> {
            if req.field("token").and_then(Value::as_str) != Some("t0ken") {
                return refuse("Invalid token.");
            }
            let Data(add) = input.map_err(|e| match e.is_missing() {
                true => Refusal::new("Send two numbers."),
                false => Refusal::from(e),
            })?;
            Ok(json!(add.a + add.b))
        },
    );
    let answer = |frame: &str| sent(&plugin, 0, frame).remove(0);
    assert_eq!(
        answer(r#"{"id":1,"type":"add","data":{"a":"x"}}"#)["error"],
        "Invalid token."
    );
    assert_eq!(
        answer(r#"{"id":1,"type":"add","token":"t0ken"}"#)["error"],
        "Send two numbers."
    );
    assert_eq!(
        answer(r#"{"id":1,"type":"add","token":"t0ken","data":{"a":1}}"#)["error"],
        "Invalid data: missing field `b`"
    );
    assert_eq!(
        answer(r#"{"id":1,"type":"add","token":"t0ken","data":{"a":1,"b":2}}"#),
        json!({"id":1,"type":"add","data":3})
    );
}

#[test]
fn errors_fail_the_call_and_refusals_answer_it() {
    let plugin = Plugin::new("t", "1")
        .handle("fail", |conn: &mut Connection| -> HandlerResult {
            conn.add_to_group("g");
            conn.send_message(Message::new())?;
            Ok(())
        })
        .handle("null", || -> Result<Value, &str> { Ok(Value::Null) })
        .handle("text", || -> Result<Value, String> { Err("broken".into()) });
    assert_eq!(
        call(&plugin, 0, r#"{"id":1,"type":"fail"}"#),
        Err("cannot send an empty message".to_owned())
    );
    assert_eq!(
        sent(&plugin, 1, r#"{"id":1,"type":"null"}"#),
        [json!({"id":1,"type":"null"})]
    );
    assert_eq!(
        call(&plugin, 2, r#"{"id":1,"type":"text"}"#),
        Err("broken".to_owned())
    );
}

struct Counter {
    start: i64,
}

fn counted(counter: &Counter, Data(by): Data<i64>) -> Result<Value, Refusal> {
    Ok(json!(counter.start + by))
}

#[test]
fn a_stateful_plugin_hands_its_state_first_or_anywhere() {
    let stateful = Plugin::new("t", "1")
        .with_state(|start: i64| -> Result<Counter, String> { Ok(Counter { start }) })
        .handle("first", counted)
        .inline()
        .handle(
            "anywhere",
            |Data(by): Data<i64>, counter: State<Counter>| -> Result<Value, Refusal> {
                Ok(json!(counter.start - by))
            },
        )
        .handle(
            Types::configured(|counter: &Counter| vec![format!("from-{}", counter.start)]),
            |req: &Request| -> Result<Value, Refusal> { Ok(json!(req.kind())) },
        )
        .inline();
    let plugin = Plugin::from(stateful);
    // Before the configuration: no state, no configured type.
    assert_eq!(
        call(&plugin, 0, r#"{"id":1,"type":"first","data":1}"#),
        Err("The plugin was not configured by this server.".to_owned())
    );
    assert!(plugin.declared().handlers[2].types.is_empty());
    plugin.configure("40").unwrap();
    assert_eq!(modes(&plugin), [MODE_INLINE, MODE_POOLED, MODE_INLINE]);
    assert_eq!(plugin.declared().handlers[2].types[0].as_str(), "from-40");
    assert_eq!(
        sent(&plugin, 0, r#"{"id":1,"type":"first","data":2}"#),
        [json!({"id":1,"type":"first","data":42})]
    );
    assert_eq!(
        sent(&plugin, 1, r#"{"id":1,"type":"anywhere","data":2}"#)[0]["data"],
        38
    );
    assert_eq!(
        sent(&plugin, 2, r#"{"id":1,"type":"from-40"}"#)[0]["data"],
        "from-40"
    );
}

#[test]
#[should_panic(expected = "takes it 2 times")]
fn a_handler_taking_the_connection_twice_is_refused() {
    let _ = Plugin::new("t", "1").handle("x", |_: &mut Connection, _: &mut Connection| {});
}

#[test]
#[should_panic(expected = "inline() applies to the handler added just before it")]
fn inline_without_a_handler_is_refused() {
    let _ = Plugin::new("t", "1").inline();
}

/// `publish` asks the host once and reports both counts (none without a
/// host); `reply` and `reply_error` answer the request.
#[test]
fn publish_and_replies() {
    let plugin = Plugin::new("t", "1").handle(
        "say",
        |req: &Request, conn: &mut Connection| -> HandlerResult {
            conn.add_to_group("g");
            let published = conn.publish("g", Message::new().kind("said"))?;
            conn.reply(req, json!([published.members, published.local]));
            conn.reply_error(req, "and an error");
            Ok(())
        },
    );
    let effects = call(&plugin, 0, r#"{"id":[1],"type":"say"}"#).unwrap();
    assert_eq!(effects[1].0, abi::EFFECT_GROUP_SEND);
    assert_eq!(
        effects[2].2,
        json!({"id":[1],"type":"say","data":[1, 1]}),
        "its own join counts"
    );
    assert_eq!(
        effects[3].2,
        json!({"id":[1],"type":"say","error":"and an error"})
    );
}

/// The registration methods of plugin-api 1.0-1.3 still build and behave
/// as they did: plugins written for them keep working.
#[test]
#[allow(deprecated)]
fn the_methods_of_earlier_versions_still_work() {
    fn echo(req: &Request, conn: &mut Connection) -> HandlerResult {
        conn.send_success(req.id(), req.kind(), req.data().cloned())?;
        Ok(())
    }
    let plain = Plugin::new("t", "1")
        .handler("a", echo)
        .inline_handler(["b", "c"], |req, conn| {
            conn.send_error(req.id(), req.kind(), "no")?;
            Ok(())
        })
        .typed("d", |n: i64| -> Result<i64, String> { Ok(n + 1) })
        .typed_handler("e", |(): (), _: &Request, _: &mut Connection| {
            Ok::<_, Refusal>(())
        });
    assert_eq!(
        modes(&plain),
        [MODE_POOLED, MODE_INLINE, MODE_POOLED, MODE_POOLED]
    );
    assert_eq!(
        sent(&plain, 0, r#"{"id":1,"type":"a","data":5}"#),
        [json!({"id":1,"type":"a","data":5})]
    );
    assert_eq!(
        sent(&plain, 1, r#"{"id":1,"type":"c"}"#),
        [json!({"id":1,"type":"c","error":"no"})]
    );
    assert_eq!(
        sent(&plain, 2, r#"{"id":1,"type":"d","data":"x"}"#)[0]["error"],
        "Invalid data: invalid type: string \"x\", expected i64"
    );
    assert_eq!(
        sent(&plain, 2, r#"{"id":1,"type":"d","data":1}"#)[0]["data"],
        2
    );
    // A typed handler's `()` is a reply without data.
    assert_eq!(
        sent(&plain, 3, r#"{"id":1,"type":"e"}"#),
        [json!({"id":1,"type":"e"})]
    );

    let stateful = Plugin::new("t", "1")
        .with_state(|start: i64| -> Result<Counter, String> { Ok(Counter { start }) })
        .handler("a", |c: &Counter, req, conn| {
            conn.send_success(req.id(), req.kind(), Some(json!(c.start)))?;
            Ok(())
        })
        .inline_handler("b", |_, _, _| Ok(()))
        .typed("c", |c: &Counter, by: i64| Ok::<_, String>(c.start + by))
        .typed_handler(
            "d",
            |c: &Counter, by: i64, _: &Request, _: &mut Connection| Ok::<_, String>(c.start * by),
        )
        .configured_handler(|_| vec!["e".to_owned()], |_, _, _| Ok(()));
    let plugin = Plugin::from(stateful);
    plugin.configure("3").unwrap();
    assert_eq!(
        modes(&plugin),
        [
            MODE_POOLED,
            MODE_INLINE,
            MODE_POOLED,
            MODE_POOLED,
            MODE_POOLED
        ]
    );
    assert_eq!(sent(&plugin, 0, r#"{"id":1,"type":"a"}"#)[0]["data"], 3);
    assert_eq!(
        sent(&plugin, 2, r#"{"id":1,"type":"c","data":2}"#)[0]["data"],
        5
    );
    assert_eq!(
        sent(&plugin, 3, r#"{"id":1,"type":"d","data":2}"#)[0]["data"],
        6
    );
    assert_eq!(plugin.declared().handlers[4].types[0].as_str(), "e");
}
