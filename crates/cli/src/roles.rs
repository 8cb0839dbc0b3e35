//! Running a role: load and check the configuration, connect, run until a signal.

use std::process::ExitCode;

use nico_runtime::{KubeAccess, RoleContext, Telemetry, init_logging, shutdown_signal};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::EXIT_USAGE;
use crate::args::{Command, GlobalArgs};
use crate::config::{FileConfig, load};

pub(crate) async fn run(global: GlobalArgs, command: Command) -> ExitCode {
    let mut overrides: Vec<(&str, figment::value::Value)> = Vec::new();
    if let Some(path) = &global.kubeconfig {
        overrides.push(("kubeconfig", path.display().to_string().into()));
    }
    if let Some(format) = global.log_format {
        let name = match format {
            nico_runtime::LogFormat::Text => "text",
            nico_runtime::LogFormat::Json => "json",
        };
        overrides.push(("log_format", name.into()));
    }
    if let Command::CsiNode(args) = &command {
        if let Some(node_id) = &args.node_id {
            overrides.push(("csi_node.node_id", node_id.clone().into()));
        }
        if let Some(endpoint) = &args.endpoint {
            overrides.push(("csi_node.endpoint", endpoint.display().to_string().into()));
        }
    }
    let config = match load(global.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => return usage_error(&e),
    };
    init_logging(config.log_format, &config.log_filter);

    match command {
        Command::CsiNode(_) => run_csi_node(&global, config).await,
        Command::Approver => run_approver(&global, config).await,
        Command::Issuer => run_issuer(&global, config).await,
        Command::Webhook => run_webhook(&global, config).await,
        Command::Dev(args) => crate::dev::run(args, config).await,
        Command::Inspect { dir } => crate::inspect::run(&dir, &config.csi_node.files),
        Command::SpiffeId(_) | Command::Version => ExitCode::SUCCESS,
    }
}

fn usage_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(EXIT_USAGE)
}

fn check_only(what: &str, debug: &dyn std::fmt::Debug) -> ExitCode {
    crate::print_line(&format!("{what} configuration is valid:\n{debug:#?}"));
    ExitCode::SUCCESS
}

/// Connects to the API server, starts the health and metrics endpoints and returns what the
/// role runs with.
async fn context(config: &FileConfig) -> Result<RoleContext, ExitCode> {
    let access = KubeAccess::load(config.kubeconfig.as_deref())
        .await
        .map_err(|e| {
            error!(error = %e, "failed to set up the kube client");
            ExitCode::FAILURE
        })?;
    let shutdown = shutdown_token();
    let telemetry = Telemetry::new();
    telemetry
        .serve(config.health_address, shutdown.clone())
        .await
        .map_err(|e| {
            error!(error = %e, "failed to serve health and metrics");
            ExitCode::FAILURE
        })?;
    Ok(RoleContext {
        access,
        telemetry,
        shutdown,
        identity: config.pod_name.clone(),
        namespace: config.pod_namespace.clone(),
    })
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

async fn run_csi_node(global: &GlobalArgs, config: FileConfig) -> ExitCode {
    let settings = match config.csi_node.validate() {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    if global.check_config {
        return check_only("csi-node", &settings);
    }
    let ctx = match context(&config).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    let shutdown = ctx.shutdown.clone();
    let endpoint = settings.endpoint.clone();
    let driver = match nico_csi_node::Driver::start(settings, &ctx) {
        Ok(driver) => driver,
        Err(e) => {
            error!(error = %e, "failed to start the CSI driver");
            return ExitCode::FAILURE;
        }
    };
    match nico_csi_node::serve(driver, &endpoint, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "CSI server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_approver(global: &GlobalArgs, config: FileConfig) -> ExitCode {
    let settings = match config.approver.validate() {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    if global.check_config {
        return check_only("approver", &settings);
    }
    let ctx = match context(&config).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    match nico_approver::run(settings, ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "approver failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_issuer(global: &GlobalArgs, config: FileConfig) -> ExitCode {
    let settings = match config.issuer.validate() {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    if global.check_config {
        return check_only("issuer", &settings);
    }
    let ctx = match context(&config).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    match nico_issuer::run(settings, ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "issuer failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_webhook(global: &GlobalArgs, config: FileConfig) -> ExitCode {
    let settings = match config.webhook.validate() {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    if global.check_config {
        return check_only("webhook", &settings);
    }
    // Bound before connecting, so a taken port is reported before anything else happens.
    let webhook = match nico_webhook::Webhook::bind(settings) {
        Ok(webhook) => webhook,
        Err(e) => {
            error!(error = %e, "failed to start the webhook");
            return ExitCode::FAILURE;
        }
    };
    let ctx = match context(&config).await {
        Ok(ctx) => ctx,
        Err(code) => return code,
    };
    match webhook.run(ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "webhook failed");
            ExitCode::FAILURE
        }
    }
}
