//! `cai serve`: a local model behind an OpenAI-compatible HTTP API (cai-server's router),
//! until Ctrl-C or SIGTERM, which let the requests already running finish.

use std::time::Duration;

use anyhow::Context;
use cai_server::{
    reward_router, router, serve, ConnectionTimeouts, Engine, EngineOptions, ServerOptions,
};
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
    /// Require `Authorization: Bearer <KEY>` on every route but /health. The key is taken
    /// from --api-key or --api-key-file (one of the two), else from the CAI_API_KEY
    /// environment variable; none of them: no key. A key on the command line is visible to
    /// other users in `ps`: prefer the file or the variable
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line; surrounding whitespace is dropped)
    #[arg(long, value_name = "PATH", conflicts_with = "api_key")]
    pub api_key_file: Option<std::path::PathBuf>,
    /// The model id clients send and /v1/models lists [default: the name given to --model,
    /// and the model directory's name too when it differs]
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
    /// Seconds a connection may take to send a request's headers; an idle keep-alive
    /// connection is closed after as long
    #[arg(long, default_value_t = 30.0, value_name = "S")]
    pub header_timeout: f64,
    /// Seconds a request's body may take to arrive after its headers (then 408)
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub body_timeout: f64,
    /// Seconds a client may take none of an answer (a stream it stopped reading) before it is
    /// disconnected and its rows leave the batch
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub write_timeout: f64,
}

/// Where the API key came from, for the startup line.
enum KeySource {
    Flag,
    File(std::path::PathBuf),
    Env,
}

/// The API key by precedence: --api-key or --api-key-file (clap refuses both), then
/// CAI_API_KEY.
fn api_key(args: &ServeArgs) -> anyhow::Result<Option<(String, KeySource)>> {
    if let Some(key) = &args.api_key {
        eprintln!(
            "warning: --api-key is visible to other users of this machine (ps); prefer \
             --api-key-file or the CAI_API_KEY environment variable"
        );
        return Ok(Some((key.clone(), KeySource::Flag)));
    }
    if let Some(path) = &args.api_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::Error::new(UsageError(format!(
                "--api-key-file {}: cannot read it ({e}); give a file holding the key",
                path.display()
            )))
        })?;
        let key = text.lines().next().unwrap_or("").trim().to_owned();
        ensure(!key.is_empty(), || {
            format!(
                "--api-key-file {}: the file's first line is empty; write the key there",
                path.display()
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: --api-key-file {}: other users may read it (mode {:o}); \
                     `chmod 600` it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
        return Ok(Some((key, KeySource::File(path.clone()))));
    }
    Ok(std::env::var("CAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(|k| (k.trim().to_owned(), KeySource::Env)))
}

/// The names the server answers to: the name given to --model as typed (unless it is a
/// path), then the model directory's name when it differs (`lab` and `lab-f7f86bff…`), or
/// only --served-model-name when given.
fn served_names(args: &ServeArgs, dir: &std::path::Path) -> Vec<String> {
    if let Some(name) = &args.served_model_name {
        return vec![name.clone()];
    }
    let spec = &args.model.model;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let is_path = std::path::Path::new(spec).is_dir();
    let mut names = Vec::new();
    if !is_path {
        names.push(spec.clone());
    }
    if let Some(d) = dir_name {
        if !names.contains(&d) {
            names.push(d);
        }
    }
    if names.is_empty() {
        names.push(spec.clone());
    }
    names
}

/// Run `cai serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    ensure(args.max_batch > 0, || {
        "--max-batch 0: expected at least 1".into()
    })?;
    let key = api_key(&args)?;
    for (flag, seconds) in [
        ("--timeout", args.timeout),
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
        ("--write-timeout", args.write_timeout),
    ] {
        ensure(seconds.is_finite() && seconds > 0.0, || {
            format!("{flag} {seconds}: expected a positive number of seconds")
        })?;
    }
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
    let mut names = served_names(&args, model.dir());
    let name = names.remove(0);
    let key_note = match &key {
        None => String::new(),
        Some((_, KeySource::Flag)) => ", API key required (from --api-key)".into(),
        Some((_, KeySource::File(path))) => {
            format!(", API key required (from {})", path.display())
        }
        Some((_, KeySource::Env)) => ", API key required (from CAI_API_KEY)".into(),
    };
    let also = if names.is_empty() {
        String::new()
    } else {
        format!(" (also answers to {})", names.join(", "))
    };
    let options = ServerOptions {
        aliases: names,
        api_key: key.map(|(k, _)| k),
        max_body_bytes: args.max_body_bytes,
        max_tokens_cap: args.max_tokens_cap,
        request_timeout: Duration::from_secs_f64(args.timeout),
        header_timeout: Duration::from_secs_f64(args.header_timeout),
        body_timeout: Duration::from_secs_f64(args.body_timeout),
        write_timeout: Duration::from_secs_f64(args.write_timeout),
        ..ServerOptions::new(name.clone())
    };
    let timeouts = ConnectionTimeouts::of(&options);
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
        format!("the preference model '{name}'{also} (rewards at POST …/score; no generation;")
    } else {
        format!("'{name}'{also} (")
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
            "serving {what}context {context} tokens) on http://{bound}/v1{key_note}; Ctrl-C stops"
        );
        serve(listener, app, timeouts, shutdown_signal()).await?;
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
