//! Endpoints that fail for a while: a server that restarts within a second loses no request
//! (they are retried with back-off before the endpoint is declared dead, as many times as
//! the attempts setting says), and one that accepts connections but never answers is
//! reported by name with the timeout that expired, in the time configured.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_remote::{RemoteModel, RemoteOptions};
use cai_server::BackgroundServer;

use crate::common::{app, load, options, stalling, tiny_model};

fn requests(n: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| GenerateRequest {
            seed: i as u64,
            ..GenerateRequest::new(
                format!("Human: question {i}: how do I bake bread?\n\nAssistant:"),
                6,
                Sampling::greedy(),
            )
        })
        .collect()
}

#[test]
fn a_server_that_restarts_within_a_second_loses_no_request() {
    let (_dir, path) = tiny_model();
    let (alarm, rung) = mpsc::channel();
    let first = BackgroundServer::start(stalling(app(&path), 2, alarm), "127.0.0.1:0").unwrap();
    let addr = first.addr().to_string();
    let remote = RemoteModel::open(
        &first.url(),
        RemoteOptions {
            concurrency: 16,
            attempts: 10,
            backoff: Duration::from_millis(50),
            ..options()
        },
    )
    .unwrap();
    let requests = requests(16);
    let expected = load(&path).generate(&requests).unwrap();
    let got = std::thread::scope(|scope| {
        let addr = addr.clone();
        let path = path.clone();
        let restarted = scope.spawn(move || {
            // Once most requests hang inside the server, it dies, stays down for 0.7 s (its
            // port refuses connections) and comes back on the same address.
            for _ in 0..12 {
                rung.recv().unwrap();
            }
            first.kill();
            std::thread::sleep(Duration::from_millis(700));
            BackgroundServer::start(app(&path), &addr).unwrap()
        });
        let got = remote.generate(&requests);
        drop(restarted.join().unwrap());
        got
    });
    let got = got.unwrap_or_else(|e| panic!("the restart lost requests: {e}"));
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g.text, e.text, "request {i}");
    }
    assert!(remote.dead_endpoints().is_empty());
}

#[test]
fn an_endpoint_down_for_good_is_dead_after_the_attempts() {
    let gone = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", listener.local_addr().unwrap())
    };
    let started = Instant::now();
    let err = RemoteModel::open(
        &gone,
        RemoteOptions {
            attempts: 3,
            backoff: Duration::from_millis(100),
            ..options()
        },
    )
    .err()
    .unwrap()
    .to_string();
    let took = started.elapsed();
    assert!(err.contains(&gone) && err.contains("3 attempts"), "{err}");
    // Two waits between three attempts: about 0.1 s and 0.2 s, each with jitter.
    assert!(
        took >= Duration::from_millis(140) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

/// A listener that accepts connections and never answers; it holds them until the test ends.
fn silent_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    url
}

#[test]
fn an_endpoint_that_accepts_and_never_answers_is_named_with_its_timeout() {
    let url = silent_listener();
    let started = Instant::now();
    let err = RemoteModel::open(
        &url,
        RemoteOptions {
            first_byte_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&url)
            && err.contains("0.3 s")
            && err.contains("CAI_REMOTE_FIRST_BYTE_TIMEOUT"),
        "{err}"
    );
}

#[test]
fn a_request_that_is_never_answered_fails_after_the_request_timeout() {
    let (_dir, path) = tiny_model();
    let (alarm, _rung) = mpsc::channel();
    let server = BackgroundServer::start(stalling(app(&path), 0, alarm), "127.0.0.1:0").unwrap();
    let remote = RemoteModel::open(
        &server.url(),
        RemoteOptions {
            request_timeout: Duration::from_millis(500),
            attempts: 2,
            ..options()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = remote.generate(&requests(2)).unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&server.url()) && err.contains("0.5 s") && err.contains("CAI_REMOTE_TIMEOUT"),
        "{err}"
    );
    server.kill();
}

#[test]
fn a_server_still_starting_is_waited_for_when_opened() {
    let (_dir, path) = tiny_model();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let starting = app(&path).layer(middleware::from_fn(move |request: Request, next: Next| {
        let counter = counter.clone();
        async move {
            if request.uri().path().ends_with("/models")
                && counter.fetch_add(1, Ordering::SeqCst) < 2
            {
                return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            next.run(request).await
        }
    }));
    let server = BackgroundServer::start(starting, "127.0.0.1:0").unwrap();
    let remote = RemoteModel::open(&server.url(), options()).unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 3);
    assert_eq!(remote.generate(&requests(1)).unwrap().len(), 1);
    // A refusal that waiting cannot cure fails at once.
    let err = RemoteModel::open(
        &server.url(),
        RemoteOptions {
            model: Some("gpt-4".into()),
            ..options()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("does not serve the model 'gpt-4'"), "{err}");
}
