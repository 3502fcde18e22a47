//! The command line: `serve`, `check-config`, `send`, `dead-letters`, `quarantine`,
//! `replay`, `healthcheck`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::{Application, open_store};
use crate::config::{Config, load};
use crate::signature::{SigningKey, sign_fields, sign_raw};
use crate::store::Mode;
use crate::store::Replay;

/// Receives SignalWire RecordingStatusCallback webhooks and delivers every recording
/// event to the systems that need it.
#[derive(Debug, Parser)]
#[command(name = "recordhook", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, also from `RECORDHOOK_CONFIG`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The TOML config file. Every key can be overridden by `RECORDHOOK_<SECTION>__<KEY>`.
    #[arg(long, env = "RECORDHOOK_CONFIG")]
    pub config: Option<PathBuf>,
}

/// A subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(ConfigArg),
    /// Validate a config: exit 0, or non-zero naming the bad key and where it came from.
    CheckConfig(ConfigArg),
    /// Send a correctly signed test callback.
    Send(SendArgs),
    /// List deliveries that gave up.
    DeadLetters(ConfigArg),
    /// List authentic callbacks that failed validation, with the reasons.
    Quarantine(ConfigArg),
    /// Put dead deliveries back in the queue.
    Replay(ReplayArgs),
    /// Exit 0 if /healthz answers 200 (for a container HEALTHCHECK without curl).
    Healthcheck(HealthcheckArgs),
}

/// Shape of the test callback.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// A form-urlencoded POST, as SignalWire sends.
    Form,
    /// A JSON POST, as the webhook spec documents.
    Json,
    /// A GET with the fields in the query string.
    Get,
}

/// `recordhook send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The callback URL, exactly as SignalWire would call it.
    #[arg(long)]
    pub url: String,
    /// The Signing Key to sign with.
    #[arg(long, env = "SIGNALWIRE_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: String,
    /// RecordingStatus.
    #[arg(long, default_value = "completed")]
    pub status: String,
    /// Body shape.
    #[arg(long, value_enum, default_value = "form")]
    pub format: Format,
    /// Extra or overriding fields, `Name=value` (an empty value removes a default field).
    #[arg(value_name = "FIELD=VALUE")]
    pub fields: Vec<String>,
}

/// `recordhook replay`
#[derive(Debug, Args)]
#[group(id = "which", required = true, multiple = false, args = ["delivery", "all_dead"])]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Replay one delivery, by the id `dead-letters` shows.
    #[arg(long)]
    pub delivery: Option<i64>,
    /// Replay every dead letter.
    #[arg(long)]
    pub all_dead: bool,
}

/// `recordhook healthcheck`
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The health URL (default: port of `RECORDHOOK_SERVER__LISTEN`, else 8080, on loopback).
    #[arg(long)]
    pub url: Option<String>,
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::CheckConfig(a) => check_config(a),
        Command::Send(a) => send(a).await,
        Command::DeadLetters(a) => dead_letters(a).await,
        Command::Quarantine(a) => quarantine(a).await,
        Command::Replay(a) => replay(a).await,
        Command::Healthcheck(a) => healthcheck(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn config(arg: &ConfigArg) -> Result<Config> {
    Ok(load(arg.config.as_deref())?)
}

async fn serve(arg: ConfigArg) -> Result {
    crate::telemetry::init();
    let config = config(&arg).inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let app = Application::build(config).await.inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    app.run_until_stopped(shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGTERM (what orchestrators send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn check_config(arg: ConfigArg) -> Result {
    let config = config(&arg)?;
    println!(
        "ok: {} handler(s), store {}, signatures {}",
        config.handlers.len(),
        match config.store.kind {
            crate::config::StoreKind::Sqlite => format!("sqlite {}", config.store.path.display()),
            crate::config::StoreKind::Postgres =>
                format!("postgres {}", crate::config::redact_url(config.store.url.as_deref().unwrap_or_default())),
        },
        match config.signature.mode {
            crate::config::SignatureMode::Required => "required",
            crate::config::SignatureMode::Disabled => "DISABLED",
        }
    );
    Ok(())
}

async fn dead_letters(arg: ConfigArg) -> Result {
    let store = open_store(&config(&arg)?, Mode::Tool).await?;
    println!("delivery_id\thandler\tRecordingSid\tRecordingStatus\tattempts\tlast_error");
    for d in store.dead_letters().await? {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            d.delivery_id,
            d.handler,
            d.recording_sid,
            d.recording_status,
            d.attempts,
            d.last_error.replace(['\t', '\n'], " ")
        );
    }
    Ok(())
}

async fn quarantine(arg: ConfigArg) -> Result {
    let store = open_store(&config(&arg)?, Mode::Tool).await?;
    println!("id\treceived_at\terrors\tfields");
    for q in store.quarantined().await? {
        let at = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(q.received_at.max(0) as u64));
        println!("{}\t{}\t{}\t{}", q.id, at, q.errors, q.fields);
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> Result {
    let store = open_store(&config(&args.config)?, Mode::Tool).await?;
    let which = match args.delivery {
        Some(id) => Replay::Delivery(id),
        None => Replay::AllDead,
    };
    let n = store.replay(which).await?;
    println!("replayed {n} delivery(ies)");
    Ok(())
}

async fn healthcheck(args: HealthcheckArgs) -> Result {
    let url = args.url.unwrap_or_else(|| {
        let port = std::env::var("RECORDHOOK_SERVER__LISTEN")
            .ok()
            .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
            .map_or(8080, |a| a.port());
        format!("http://127.0.0.1:{port}/healthz")
    });
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build()?;
    let status = client.get(&url).send().await?.status();
    if status.is_success() { Ok(()) } else { Err(format!("{url} answered {status}").into()) }
}

/// Builds, signs and sends a test callback; prints the answer.
async fn send(args: SendArgs) -> Result {
    let key = SigningKey::new(args.signing_key.clone());
    let fields = test_fields(&args.status, &args.fields)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let request = match args.format {
        Format::Form => {
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
            let signature = sign_fields(&key, &args.url, &fields);
            client
                .post(&args.url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-signalwire-signature", signature)
                .body(body)
        }
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(k, v)| {
                    let numeric = matches!(k.as_str(), "RecordingDuration" | "RecordingChannels");
                    let value = match v.parse::<u64>() {
                        Ok(n) if numeric => serde_json::Value::from(n),
                        _ => serde_json::Value::from(v.clone()),
                    };
                    (k.clone(), value)
                })
                .collect();
            let body = serde_json::to_vec(&object)?;
            let signature = sign_raw(&key, &args.url, &body);
            client
                .post(&args.url)
                .header("content-type", "application/json")
                .header("x-signalwire-signature", signature)
                .body(body)
        }
        Format::Get => {
            let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields.iter()).finish();
            let separator = if args.url.contains('?') { '&' } else { '?' };
            let url = format!("{}{separator}{query}", args.url);
            let signature = sign_fields(&key, &url, &[]);
            client.get(url).header("x-signalwire-signature", signature)
        }
    };
    let response = request.send().await?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), body.trim());
    if status.is_success() { Ok(()) } else { Err(format!("callback answered {status}").into()) }
}

/// The default fields of a test callback, with `Name=value` overrides applied.
fn test_fields(status: &str, overrides: &[String]) -> Result<Vec<(String, String)>> {
    let account = "b3877c40-da60-4998-90ad-b792e98472af";
    let recording = uuid::Uuid::new_v4().to_string();
    let mut fields: Vec<(String, String)> = vec![
        ("AccountSid".into(), account.into()),
        ("CallSid".into(), uuid::Uuid::new_v4().to_string()),
        ("RecordingSid".into(), recording.clone()),
        (
            "RecordingUrl".into(),
            format!("https://example.signalwire.com/api/laml/2010-04-01/Accounts/{account}/Recordings/{recording}"),
        ),
        ("RecordingStatus".into(), status.into()),
        ("RecordingDuration".into(), "12".into()),
        ("RecordingChannels".into(), "1".into()),
        ("RecordingSource".into(), "RecordVerb".into()),
        ("ApiVersion".into(), "2010-04-01".into()),
    ];
    if status == "in-progress" {
        fields.retain(|(k, _)| k != "RecordingDuration");
    }
    for item in overrides {
        let (name, value) = item.split_once('=').ok_or_else(|| format!("`{item}` is not Name=value"))?;
        fields.retain(|(k, _)| k != name);
        if !value.is_empty() {
            fields.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(fields)
}
