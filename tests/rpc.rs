//! Services over `bidir.json.v1` on the test bed: calls and their answers, batching, every
//! error answer and every bad-input outcome of docs/rpc.md.

use bidir::client::{Connect, Incoming};
use bidir::rpc::Services;
use bidir::testbed::{HOST, Peer, TestBed};
use bidir::{CloseCode, Message, Server};

fn services() -> Services {
    Services::new()
        .method("Calc.Add", |_cx, (a, b): (i64, i64)| Ok::<_, String>(a + b))
        .method("Calc.Div", |_cx, (a, b): (i64, i64)| {
            a.checked_div(b).ok_or_else(|| "division by zero".to_owned())
        })
        .method("Calc.Boom", |_cx, (): ()| -> Result<(), String> { panic!("boom") })
}

fn bed() -> (TestBed, Peer) {
    let builder = Server::builder().route("/rpc", services().hook());
    let mut bed = TestBed::new(builder).unwrap();
    let options = Connect::new(&format!("ws://{HOST}/rpc")).unwrap().protocol("bidir.json.v1");
    let peer = bed.connect_with(&options).unwrap();
    assert_eq!(bed.protocol(peer), Some("bidir.json.v1"));
    (bed, peer)
}

/// Sends `request` and returns the one text message answering it.
fn ask(bed: &mut TestBed, peer: Peer, request: &str) -> String {
    bed.send(peer, Message::Text(request)).unwrap();
    match &bed.recv(peer)[..] {
        [Incoming::Text(answer)] => answer.clone(),
        other => panic!("{request} got {other:?}"),
    }
}

fn closed_with(bed: &mut TestBed, peer: Peer, message: Message<'_>) -> CloseCode {
    bed.send(peer, message).unwrap();
    match bed.recv(peer).last() {
        Some(Incoming::Close(close)) => close.code,
        other => panic!("no close: {other:?}"),
    }
}

#[test]
fn calls_are_answered_with_their_values_and_typed_errors() {
    let (mut bed, peer) = bed();
    assert_eq!(ask(&mut bed, peer, r#"["call",1,"Calc.Add",[2,3]]"#), r#"["ok",1,5]"#);
    assert_eq!(
        ask(&mut bed, peer, r#"["call",2,"Calc.Div",[1,0]]"#),
        r#"["err",2,"service","division by zero","division by zero"]"#
    );
    assert_eq!(
        ask(&mut bed, peer, r#"["call",3,"Calc.Mul",[1,2]]"#),
        r#"["err",3,"unknown_method","no method Calc.Mul"]"#
    );
    assert_eq!(
        ask(&mut bed, peer, r#"["call",4,"Chat.Join",[]]"#),
        r#"["err",4,"unknown_service","no method Chat.Join"]"#
    );
    let bad_args = ask(&mut bed, peer, r#"["call",5,"Calc.Add",["two",3]]"#);
    assert!(bad_args.starts_with(r#"["err",5,"bad_args","#), "{bad_args}");
    assert_eq!(
        ask(&mut bed, peer, r#"["call",6,"Calc.Boom",[]]"#),
        r#"["err",6,"internal","Calc.Boom failed"]"#
    );
    // A request whose id can be read is answered; the connection goes on.
    let bad = ask(&mut bed, peer, r#"["call",7,"Calc.Add",{"a":2}]"#);
    assert!(bad.starts_with(r#"["err",7,"bad_request","#), "{bad}");
    assert_eq!(ask(&mut bed, peer, r#"["call",8,"Calc.Add",[40,2]]"#), r#"["ok",8,42]"#);
}

#[test]
fn the_answers_to_a_batch_go_out_as_one_batch() {
    let (mut bed, peer) = bed();
    let batch = r#"[["call",1,"Calc.Add",[1,1]],["note","Calc.Add",[0,0]],["sub",2,"news"],
                   ["call",3,"Calc.Nope",[]],["unsub",4,"news"],["unsub",5,"news"]]"#;
    assert_eq!(
        ask(&mut bed, peer, batch),
        r#"[["ok",1,2],["ok",2,null],["err",3,"unknown_method","no method Calc.Nope"],["ok",4,true],["ok",5,false]]"#
    );
    // Answers, releases and cancels for nothing in flight, and publishes, are ignored.
    bed.send(peer, Message::Text(r#"[["ok",9,1],["release",3],["cancel",4],["pub","news",1]]"#))
        .unwrap();
    assert!(bed.recv(peer).is_empty());
    // An invocation of a callback the server does not hold is refused when it wants an answer.
    assert_eq!(
        ask(&mut bed, peer, r#"["cb",7,"Said",[],10]"#),
        r#"["err",10,"released","no callback 7"]"#
    );
}

#[test]
fn bad_input_closes_with_the_documented_code() {
    for (input, code) in [
        (Message::Text("{not json"), CloseCode::INVALID_PAYLOAD),
        (Message::Text(r#"["hello",1]"#), CloseCode::POLICY_VIOLATION),
        (Message::Text(r#"{"call":4}"#), CloseCode::POLICY_VIOLATION),
        (Message::Binary(b"[]"), CloseCode::UNSUPPORTED_DATA),
    ] {
        let (mut bed, peer) = bed();
        assert_eq!(closed_with(&mut bed, peer, input), code, "{input:?}");
    }
    let (mut bed, peer) = bed();
    let huge = format!("[{}]", vec![r#"["cancel",1]"#; 1025].join(","));
    assert_eq!(closed_with(&mut bed, peer, Message::Text(&huge)), CloseCode::MESSAGE_TOO_BIG);
}

#[test]
fn a_connection_without_the_subprotocol_is_refused() {
    let builder = Server::builder().route("/rpc", services().hook());
    let mut bed = TestBed::new(builder).unwrap();
    let refused = bed.connect("/rpc").unwrap_err();
    assert!(refused.to_string().contains("400"), "{refused}");
}
