//! Running a router: [`serve`] on a listener until a shutdown signal (in-flight requests
//! finish first), each connection with a header-read timeout that also closes idle
//! keep-alive connections; and [`BackgroundServer`], a server on its own thread and runtime
//! for tests, benchmarks and programs that embed one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::error::ServerError;
use crate::options::DEFAULT_HEADER_TIMEOUT;

/// Serve `router` on `listener` until `shutdown` completes; requests already running are
/// answered before this returns. A connection that has not sent a whole request head within
/// `header_timeout` — a slow client, or an idle keep-alive connection — is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
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
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
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
    /// default header timeout.
    pub fn start(router: Router, addr: &str) -> Result<Self, ServerError> {
        Self::start_with(router, addr, DEFAULT_HEADER_TIMEOUT)
    }

    /// As [`BackgroundServer::start`], closing connections that send no request head within
    /// `header_timeout`.
    pub fn start_with(
        router: Router,
        addr: &str,
        header_timeout: Duration,
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
                    let graceful = serve(listener, router, header_timeout, async move {
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
