//! Running a router: [`serve`] on a listener until a shutdown signal (in-flight requests
//! finish first), each connection with a header-read timeout that also closes idle
//! keep-alive connections and a write timeout that cuts a client that stopped reading; and
//! [`BackgroundServer`], a server on its own thread and runtime for tests, benchmarks and
//! programs that embed one.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::Sleep;

use crate::error::ServerError;
use crate::options::ServerOptions;

/// How long a connection may keep the server waiting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionTimeouts {
    /// For a request's head; an idle keep-alive connection is closed after as long.
    pub header: Duration,
    /// For the client to take any of an answer (a stream it stopped reading).
    pub write: Duration,
}

impl ConnectionTimeouts {
    /// The timeouts of `options`.
    pub fn of(options: &ServerOptions) -> Self {
        Self {
            header: options.header_timeout,
            write: options.write_timeout,
        }
    }
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self::of(&ServerOptions::new("default"))
    }
}

/// Serve `router` on `listener` until `shutdown` completes; requests already running are
/// answered before this returns. A connection that has not sent a whole request head within
/// `timeouts.header` — a slow client, or an idle keep-alive connection — is closed, and so is
/// one that takes none of an answer for `timeouts.write`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ConnectionTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Every connection task holds a receiver; the sender's `closed` tells when all are done.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header);
            let io = TokioIo::new(WriteTimeout::new(stream, timeouts.write));
            let connection = builder.serve_connection(io, service);
            let mut connection = pin!(connection);
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, "connection closed: {e}");
                        }
                        break;
                    }
                    changed = stop.changed() => {
                        connection.as_mut().graceful_shutdown();
                        if changed.is_err() {
                            // The server is gone; the graceful shutdown finishes the request.
                            let _ = connection.as_mut().await;
                            break;
                        }
                    }
                }
            }
            drop(stop);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    Ok(())
}

/// A server on a background thread with its own runtime. Dropping it stops it gracefully.
pub struct BackgroundServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl BackgroundServer {
    /// Bind `addr` (`127.0.0.1:0` picks a free port) and serve `router` there with the
    /// default connection timeouts.
    pub fn start(router: Router, addr: &str) -> Result<Self, ServerError> {
        Self::start_with(router, addr, ConnectionTimeouts::default())
    }

    /// As [`BackgroundServer::start`], with these connection timeouts.
    pub fn start_with(
        router: Router,
        addr: &str,
        timeouts: ConnectionTimeouts,
    ) -> Result<Self, ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cai-http")
            .enable_all()
            .build()
            .map_err(|source| ServerError::Io {
                what: "starting the HTTP runtime".into(),
                source,
            })?;
        let listener = runtime
            .block_on(TcpListener::bind(addr))
            .map_err(|source| ServerError::Io {
                what: format!("binding {addr}"),
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Io {
            what: format!("reading the address bound for {addr}"),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cai-server".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let graceful = serve(listener, router, timeouts, async move {
                        let _ = stopped.await;
                    });
                    tokio::select! {
                        result = graceful => result,
                        // Killed: leave the connections to die with the runtime.
                        Ok(()) = killed => Ok(()),
                    }
                });
                runtime.shutdown_background();
                result
            })
            .map_err(|source| ServerError::Io {
                what: "spawning the server thread".into(),
                source,
            })?;
        Ok(Self {
            addr: bound,
            stop: Some(stop),
            kill: Some(kill),
            thread: Some(thread),
        })
    }

    /// The address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API, `http://<addr>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stop accepting connections, answer the requests already running, and wait.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.finish(false)
    }

    /// Stop at once: every open connection is cut, as if the process had died.
    pub fn kill(mut self) {
        let _ = self.finish(true);
    }

    fn finish(&mut self, kill: bool) -> Result<(), ServerError> {
        let signal = if kill {
            self.kill.take()
        } else {
            self.stop.take()
        };
        if let Some(signal) = signal {
            let _ = signal.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        let _ = self.finish(false);
    }
}

/// A connection whose writes fail once the peer has taken nothing for `limit`: hyper has no
/// write timeout, and an answer nobody reads would otherwise hold its connection, and its
/// rows in the batch, for good.
struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Running while a write waits on the peer.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `poll`'s result, or a timeout error once the peer has stalled for the limit.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took none of the answer for {} s",
                    limit.as_secs_f64()
                ),
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
