//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use nico_runtime::LogFormat;

/// One binary that gives every Kubernetes pod a SPIFFE identity as X.509 files.
#[derive(Debug, Parser)]
#[command(name = "nico-identity", version, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (one section per role; see config/ for samples).
    #[arg(long, global = true, env = "NICO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kubeconfig to use; without it KUBECONFIG, ~/.kube/config or the in-cluster account.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_name = "text|json")]
    pub log_format: Option<LogFormat>,
    /// Validate the configuration, print it, and exit (0 when valid, 2 otherwise).
    #[arg(long, global = true)]
    pub check_config: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// CSI node plugin (DaemonSet): keys, CSRs and certificates for pod volumes.
    CsiNode(CsiNodeArgs),
    /// Approves or denies CertificateRequests.
    Approver,
    /// Signs approved CertificateRequests.
    Issuer,
    /// Admission webhooks for CertificateRequests and pods.
    Webhook,
    /// Everything in one process against an in-memory cluster, for trying it out.
    Dev(crate::dev::DevArgs),
    /// SPIFFE ID tools.
    #[command(subcommand)]
    SpiffeId(SpiffeIdCommand),
    /// Show and check the certificate in a volume directory (exit 0 healthy, 1 not).
    Inspect {
        /// The volume directory, e.g. /var/run/secrets/spiffe.io inside a pod.
        dir: PathBuf,
    },
    /// Print the version.
    Version,
}

/// Flags of `csi-node`.
#[derive(Debug, Clone, Args)]
pub struct CsiNodeArgs {
    /// This node's name (overrides csi_node.node_id).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_id: Option<String>,
    /// Unix socket to serve CSI on (overrides csi_node.endpoint).
    #[arg(long, value_name = "PATH")]
    pub endpoint: Option<PathBuf>,
}

/// `spiffe-id` subcommands.
#[derive(Debug, Subcommand)]
pub enum SpiffeIdCommand {
    /// Parse a SPIFFE ID strictly; exit 0 when valid, 2 with the reason when not.
    Parse {
        /// The ID, e.g. spiffe://nico.local/demo/sa/web.
        id: String,
    },
}
