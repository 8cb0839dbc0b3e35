//! `nico-identity dev`: the dev cluster, the webhook, the approver, the issuer and the CSI
//! node plugin in one process, with a stand-in kubelet that publishes a volume for each demo
//! pod.
//!
//! The pieces talk to each other exactly as in a cluster: the roles use the real kube client
//! against the dev cluster's HTTP API, the dev cluster calls the webhook over HTTPS through
//! its Service (routed to the webhook's loopback port), trusting the caBundle the webhook
//! wrote, and the kubelet stand-in calls the CSI plugin over its unix socket with the
//! request kubelet would send.

mod environment;
mod kubelet;

pub use environment::{DEV_NODE, DevEnvironment, DevError, DevOptions, Embedded};
pub use kubelet::{Kubelet, KubeletError, PodVolume, VolumeFile, csi_channel, publish_request};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tracing::{error, info, warn};

use crate::config::FileConfig;

/// Flags of `dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Where the kubeconfig, the CA, the CSI socket and each pod's files are written.
    #[arg(long, default_value = ".nico-dev", value_name = "DIR")]
    pub workdir: PathBuf,
    /// How many demo pods (web-0, web-1, ...) to create.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub pods: usize,
    /// Exit 0 once every pod has its files (exit 1 if any publish fails).
    #[arg(long)]
    pub exit_after_issue: bool,
    /// Certificate lifetime to request (Go duration syntax), e.g. 2m to watch renewals.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,
}

/// How often the kubelet stand-in republishes (kubelet does so periodically for drivers with
/// `requiresRepublish`, which is how the driver receives fresh tokens).
const REPUBLISH_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) async fn run(args: DevArgs, config: FileConfig) -> ExitCode {
    if args.pods == 0 {
        eprintln!("error: --pods must be at least 1");
        return ExitCode::from(crate::EXIT_USAGE);
    }
    let mut options = DevOptions::new(args.workdir.clone());
    options.duration = args.duration.clone();
    options.config = config;
    let environment = match DevEnvironment::start(options).await {
        Ok(environment) => environment,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = drive(&environment, &args).await;
    environment.stop().await;
    code
}

async fn drive(environment: &DevEnvironment, args: &DevArgs) -> ExitCode {
    let pods: Vec<String> = (0..args.pods).map(|i| format!("web-{i}")).collect();
    let mut volumes = Vec::new();
    for pod in &pods {
        match environment.create_demo_pod("demo", "web", pod).await {
            Ok(volume) => volumes.push(volume),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    crate::print_line(&format!("dev cluster:  {}", environment.cluster.url()));
    if let Some(webhook) = &environment.webhook {
        crate::print_line(&format!("webhook:      https://{}", webhook.local_addr()));
    }
    crate::print_line(&format!(
        "kubeconfig:   {}  (kubectl --kubeconfig {} get certificaterequests -A)",
        environment.kubeconfig_path().display(),
        environment.kubeconfig_path().display()
    ));
    let kubelet = match environment.kubelet().await {
        Ok(kubelet) => kubelet,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for volume in &volumes {
        match kubelet.publish(volume).await {
            Ok(()) => print_volume(volume),
            Err(e) => {
                eprintln!("error: {}/{}: {e}", volume.namespace, volume.pod_name);
                failed = true;
            }
        }
    }
    if args.exit_after_issue {
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    crate::print_line("renewing until Ctrl-C");
    let mut serials: Vec<Option<String>> = volumes.iter().map(|v| v.current_serial()).collect();
    let shutdown = nico_runtime::shutdown_signal();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(REPUBLISH_INTERVAL) => {}
        }
        for (volume, last) in volumes.iter().zip(serials.iter_mut()) {
            if let Err(e) = kubelet.publish(volume).await {
                warn!(pod = %volume.pod_name, error = %e, "republish failed");
            }
            let now = volume.current_serial();
            if now != *last {
                info!(pod = %volume.pod_name, "certificate renewed");
                print_volume(volume);
                *last = now;
            }
        }
    }
    crate::print_line("stopped");
    ExitCode::SUCCESS
}

fn print_volume(volume: &PodVolume) {
    match volume.describe() {
        Ok(lines) => {
            for line in lines {
                crate::print_line(&line);
            }
        }
        Err(e) => {
            error!(pod = %volume.pod_name, error = %e, "failed to read the pod's certificate")
        }
    }
}
