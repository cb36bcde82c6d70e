//! Several endpoints: work is spread over them; an endpoint that does not answer at the start
//! is reported and left out; one killed mid-run has its requests re-run on the others and is
//! declared dead, by name, once it has failed its attempts; a refused request fails at once
//! with the server's message.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::Router;
use cai_core::{GenerateRequest, LanguageModel, Sampling};
use cai_remote::RemoteModel;

use crate::common::{app, load, options, serve, stalling, tiny_model};

/// Count the completion requests that reach `app`.
fn counted(app: Router, count: Arc<AtomicUsize>) -> Router {
    app.layer(middleware::from_fn(move |request: Request, next: Next| {
        let count = count.clone();
        async move {
            if request.uri().path().ends_with("/completions") {
                count.fetch_add(1, Ordering::SeqCst);
            }
            next.run(request).await
        }
    }))
}

fn requests(n: usize) -> Vec<GenerateRequest> {
    (0..n)
        .map(|i| GenerateRequest {
            seed: i as u64,
            ..GenerateRequest::new(
                format!("Human: question {i}: how do I bake bread?\n\nAssistant:"),
                8,
                if i % 3 == 0 {
                    Sampling::greedy()
                } else {
                    Sampling::default()
                },
            )
        })
        .collect()
}

/// A URL on which nothing listens.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

#[test]
fn work_is_spread_over_the_endpoints() {
    let (_dir, path) = tiny_model();
    let (a_count, b_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let a = serve(counted(app(&path), a_count.clone()));
    let b = serve(counted(app(&path), b_count.clone()));
    let remote = RemoteModel::open(&format!("{},{}", a.url(), b.url()), options()).unwrap();
    let out = remote.generate(&requests(24)).unwrap();
    assert_eq!(out.len(), 24);
    let (na, nb) = (
        a_count.load(Ordering::SeqCst),
        b_count.load(Ordering::SeqCst),
    );
    assert_eq!(na + nb, 24);
    assert!(na > 0 && nb > 0, "a {na}, b {nb}");
}

#[test]
fn an_endpoint_killed_mid_run_is_reported_and_its_work_rerun_on_the_others() {
    let (_dir, path) = tiny_model();
    let a = serve(app(&path));
    let (alarm, rung) = mpsc::channel();
    let b = serve(stalling(app(&path), 3, alarm));
    let b_url = b.url();
    let remote = RemoteModel::open(&format!("{},{}", a.url(), b_url), options()).unwrap();
    let requests = requests(24);
    let expected = load(&path).generate(&requests).unwrap();
    let got = std::thread::scope(|scope| {
        scope.spawn(move || {
            rung.recv().unwrap();
            b.kill();
        });
        remote.generate(&requests).unwrap()
    });
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            (&g.text, &g.token_ids),
            (&e.text, &e.token_ids),
            "request {i}"
        );
    }
    // The dead endpoint is tried again after each back-off while the live one answers, and
    // declared dead once it has failed its attempts.
    for _ in 0..50 {
        if !remote.dead_endpoints().is_empty() {
            break;
        }
        assert_eq!(remote.generate(&requests[..4]).unwrap().len(), 4);
    }
    let dead = remote.dead_endpoints();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, b_url);
    assert!(dead[0].1.contains("4 attempts"), "{dead:?}");
    // Later calls go to the live endpoint only.
    assert_eq!(remote.generate(&requests[..4]).unwrap().len(), 4);
}

#[test]
fn an_endpoint_down_at_the_start_is_left_out_and_all_down_is_an_error() {
    let (_dir, path) = tiny_model();
    let a = serve(app(&path));
    let gone = dead_url();
    let remote = RemoteModel::open(&format!("{},{gone}", a.url()), options()).unwrap();
    assert_eq!(remote.dead_endpoints()[0].0, gone);
    assert_eq!(remote.generate(&requests(3)).unwrap().len(), 3);
    let err = RemoteModel::open(&gone, options())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no endpoint answered") && err.contains(&gone),
        "{err}"
    );
    let err = RemoteModel::open("localhost:8000/v1", options())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("expected http(s)://"), "{err}");
}

#[test]
fn a_refused_request_fails_at_once_with_the_servers_message() {
    let (_dir, path) = tiny_model();
    let count = Arc::new(AtomicUsize::new(0));
    let a = serve(counted(app(&path), count.clone()));
    let remote = RemoteModel::open(&a.url(), options()).unwrap();
    let err = remote
        .generate(&[GenerateRequest::new("Human: hi", 5000, Sampling::greedy())])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&a.url()) && err.contains("400"), "{err}");
    assert!(err.contains("max_tokens"), "{err}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "a 400 is not retried");
}
