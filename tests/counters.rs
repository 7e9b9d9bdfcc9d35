//! Server counters that say what happened: a reply dropped because its connection closed is
//! not a response sent, and a fire-and-forget request dropped by its handler is not an
//! unanswered call (it wants no answer, and no error reply goes out).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fastrpc::{Call, Client, ClientConfig, ErrorKind, Server, ServerConfig};

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_after_close_is_not_counted_as_a_response() {
    let held: Arc<Mutex<Vec<Call>>> = Arc::default();
    let h = held.clone();
    let server = Server::bind("127.0.0.1:0", ServerConfig::default(), move |call: Call| {
        h.lock().unwrap().push(call);
    })
    .await
    .unwrap();
    let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
    let c2 = client.clone();
    let pending = tokio::spawn(async move { c2.call(b"hold", b"").await });
    wait_until("the call reached the handler", || {
        held.lock().unwrap().len() == 1
    })
    .await;
    // The stop timeout passes with the call still held: its connection is closed at once.
    let e = server.stop(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert_eq!(server.stats().connections_open, 0);
    assert_eq!(
        pending.await.unwrap().unwrap_err().kind(),
        ErrorKind::Connection
    );
    let call = held.lock().unwrap().pop().unwrap();
    assert_eq!(call.reply(b"late").unwrap_err().kind(), ErrorKind::Closed);
    let s = server.stats();
    assert_eq!(s.requests, 1);
    assert_eq!(s.responses, 0, "a dropped reply is not a response");
    assert_eq!(s.unanswered, 0);
    assert_eq!(s.running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_fire_and_forget_is_not_unanswered() {
    let server = Server::bind("127.0.0.1:0", ServerConfig::default(), |call: Call| {
        if call.name() != b"nowait" {
            let _ = call.reply(b"ok");
        }
        // A fire-and-forget request is dropped here: it wants no answer.
    })
    .await
    .unwrap();
    let client = Client::new(ClientConfig::new(server.local_addr())).unwrap();
    for _ in 0..5 {
        client.send(b"nowait", b"x").unwrap();
    }
    // A call after the sends: on one connection, handled after them.
    assert_eq!(client.call(b"sync", b"").await.unwrap(), b"ok");
    wait_until("the sends were handled", || {
        server.stats().nowait_requests == 5
    })
    .await;
    let s = server.stats();
    assert_eq!(s.requests, 1);
    assert_eq!(s.responses, 1);
    assert_eq!(
        s.unanswered, 0,
        "fire-and-forget requests are not unanswered calls"
    );
}
