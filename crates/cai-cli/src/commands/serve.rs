//! `cai serve`: a local model behind an OpenAI-compatible HTTP API (cai-server's router),
//! until Ctrl-C or SIGTERM, which let the requests already running finish.

use std::time::Duration;

use anyhow::Context;
use cai_server::{reward_router, router, serve, Engine, EngineOptions, ServerOptions};
use clap::Args;

use crate::model_args::ModelArgs;
use crate::usage::{ensure, UsageError};

/// Raw `cai serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer <KEY>` on every route but /health
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model id clients send and /v1/models lists [default: the model directory's name]
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Largest max_tokens a request may ask for [default: the model's context length]
    #[arg(long, value_name = "N")]
    pub max_tokens_cap: Option<usize>,
    /// Most rows (prompts × n) decoded together; requests beyond it wait their turn
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub max_batch: usize,
    /// Seconds a request may run before it is answered 408 and its rows are dropped
    #[arg(long, default_value_t = 600.0, value_name = "S")]
    pub timeout: f64,
    /// Largest request body in bytes
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub max_body_bytes: usize,
}

/// Run `cai serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    ensure(args.max_batch > 0, || {
        "--max-batch 0: expected at least 1".into()
    })?;
    ensure(args.timeout.is_finite() && args.timeout > 0.0, || {
        format!(
            "--timeout {}: expected a positive number of seconds",
            args.timeout
        )
    })?;
    ensure(!cai_remote::is_remote_spec(&args.model.model), || {
        format!(
            "--model {}: cai serve needs a local model (a directory, a cached model id or \
             lab), not an endpoint",
            args.model.model
        )
    })?;
    // A preference model is served for its rewards; any other model for generation.
    let model_dir = crate::lab_models::resolve_model_dir(&args.model.model)?;
    let (model, reward_head) = if cai_model::reward_model::is_preference_model(&model_dir) {
        let (model, head) = load_preference_model(&model_dir, &args)?;
        (model, Some(head))
    } else {
        (args.model.load()?.into_local("cai serve")?, None)
    };
    let name = args.served_model_name.clone().unwrap_or_else(|| {
        model.dir().file_name().map_or_else(
            || args.model.model.clone(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let options = ServerOptions {
        api_key: args.api_key.clone(),
        max_body_bytes: args.max_body_bytes,
        max_tokens_cap: args.max_tokens_cap,
        request_timeout: Duration::from_secs_f64(args.timeout),
        ..ServerOptions::new(name.clone())
    };
    options
        .validate()
        .map_err(|e| anyhow::Error::new(UsageError(e.to_string())))?;
    let context = model.decoder().config().max_position_embeddings;
    let engine = Engine::start(
        model,
        EngineOptions {
            max_batch_rows: args.max_batch,
        },
    );
    let what = if reward_head.is_some() {
        format!("the preference model '{name}' (rewards at POST …/score; no generation;")
    } else {
        format!("'{name}' (")
    };
    let app = match reward_head {
        Some(head) => reward_router(engine, options, head)?,
        None => router(engine, options)?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        eprintln!(
            "serving {what}context {context} tokens) on http://{bound}/v1{}; Ctrl-C stops",
            if args.api_key.is_some() {
                ", API key required"
            } else {
                ""
            }
        );
        serve(listener, app, shutdown_signal()).await?;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    eprintln!("shutting down: finishing the requests already running");
}

/// A preference model's trunk as the engine's model, and its scalar head `[1, hidden]`.
fn load_preference_model(
    dir: &std::path::Path,
    args: &ServeArgs,
) -> anyhow::Result<(cai_model::local::LocalModel, candle_core::Tensor)> {
    let device = cai_model::device::device_from_name(&args.model.device.to_string())
        .with_context(|| format!("opening device {}", args.model.device))?;
    let dtype = args
        .model
        .dtype
        .map_or(candle_core::DType::F32, crate::model_args::Dtype::to_candle);
    let mut pm = cai_model::reward_model::RewardModel::load(dir, dtype, &device, 0)
        .with_context(|| format!("loading the preference model {}", dir.display()))?;
    pm.prepare_for_inference()?;
    let tokenizer = cai_model::tokenizer::Tokenizer::from_dir(dir)?;
    let defaults = cai_model::local::GenerationDefaults::from_dir(dir)?;
    let model = cai_model::local::LocalModel::from_parts(
        dir.to_path_buf(),
        pm.decoder().clone(),
        tokenizer,
        defaults,
    );
    Ok((model, pm.head().clone()))
}
