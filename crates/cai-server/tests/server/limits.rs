//! A client cannot hold the server's memory or connections: a declared body over the limit
//! is refused before it is read, a body that trickles in, headers that never finish and an
//! idle keep-alive connection are cut after their timeouts, and a body at the limit costs
//! memory bounded by what the model's context can use.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::serve_with;

/// Connect to the server behind `url` (`http://ADDR/v1`), with a read timeout of 5 s.
fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Read until the server closes the connection; what it sent, and how long that took.
/// Fails when the connection is still open after the stream's read timeout.
fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection is still open after {:?} ({e}); read so far: {}",
                started.elapsed(),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    (
        String::from_utf8_lossy(&seen).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let s = serve_with(|o| o.max_body_bytes = 1000);
    let mut stream = connect(&s.url());
    stream
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100000000\r\n\r\n{\"model\"",
        )
        .unwrap();
    let (answer, _) = read_to_close(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("1000 bytes"), "{answer}");
}

#[test]
fn headers_that_never_finish_are_cut_after_the_header_timeout() {
    let s = serve_with(|o| o.header_timeout = Duration::from_millis(300));
    let mut stream = connect(&s.url());
    stream
        .write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    let (_, took) = read_to_close(&mut stream);
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The server still answers.
    let (status, _) = crate::common::get(&s.url().replace("/v1", "/health"), None);
    assert_eq!(status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let s = serve_with(|o| o.header_timeout = Duration::from_millis(300));
    let mut stream = connect(&s.url());
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, took) = read_to_close(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_body_that_trickles_in_is_answered_408_after_the_body_timeout() {
    let s = serve_with(|o| o.body_timeout = Duration::from_millis(300));
    let mut stream = connect(&s.url());
    stream
        .write_all(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"model\"",
        )
        .unwrap();
    let (answer, took) = read_to_close(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn a_client_that_stops_reading_a_stream_is_cut_after_the_write_timeout() {
    let s = crate::common::serve_model(256, |o| o.write_timeout = Duration::from_millis(300));
    let mut stream = connect(&s.url());
    // A small receive window, so that the answer backs up into the server soon.
    set_receive_buffer(&stream, 4096);
    // 64 choices of 200 tokens with 20 alternatives each: about 6 MB of events, more than
    // the largest send buffer the kernel gives a socket (4 MB).
    let body = serde_json::json!({
        "model": crate::common::NAME, "prompt": "Human: hi", "max_tokens": 200, "n": 64,
        "logprobs": 20, "ignore_eos": true, "stream": true, "seed": 1,
    })
    .to_string();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The client reads nothing for a while, then everything the server sent.
    std::thread::sleep(Duration::from_secs(2));
    set_receive_buffer(&stream, 4 << 20);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (answer, _) = read_to_close(&mut stream);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..200.min(answer.len())]
    );
    assert!(
        !answer.contains("data: [DONE]"),
        "the whole stream waited for a client that read nothing ({} bytes)",
        answer.len()
    );
}

/// Set a socket's receive buffer (its TCP window) to `bytes`.
fn set_receive_buffer(stream: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket this test owns, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}
