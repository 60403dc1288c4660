use std::path::PathBuf;

use clap::{Parser, Subcommand};
use compute_server::{agent, bastion, crd, scheduler, telemetry, web};

/// Self-service compute servers: one binary, several roles.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        env = "COMPUTE_SERVER_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: telemetry::LogFormat,

    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Print every CustomResourceDefinition as YAML (the files in crds/).
    Crd {
        /// Write one file per CRD into this folder instead of printing them.
        #[arg(long, env = "COMPUTE_SERVER_CRD_OUT_DIR")]
        out_dir: Option<PathBuf>,
        /// Apply them to the cluster (server-side, in-cluster or KUBECONFIG credentials) and say
        /// which changed: the Helm chart's pre-upgrade hook.
        #[arg(long, conflicts_with = "out_dir")]
        apply: bool,
    },
    /// Run the node agent: reconcile this node's ComputeServers into Docker containers.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Agent(agent::Cli),
    /// Place unscheduled ComputeServers on Ready ComputeNodes (leader-elected).
    Scheduler(scheduler::Args),
    /// Serve the web front and JSON API behind Keycloak.
    Web(web::Args),
    /// Serve the SSH jump host to users' own servers.
    Bastion(bastion::Args),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    compute_server::kube_client::install_crypto();
    // Each role has its own error type; what they say ends up here.
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = match cli.role {
        Role::Crd { apply: true, .. } => crd::apply().await.map_err(Into::into),
        Role::Crd { out_dir: None, .. } => crd::all_yaml().map(|yaml| print!("{yaml}")).map_err(Into::into),
        Role::Crd {
            out_dir: Some(dir), ..
        } => crd::write_dir(&dir).map_err(Into::into),
        Role::Agent(cli) => agent::main(cli).await.map_err(Into::into),
        Role::Scheduler(args) => scheduler::run(args).await.map_err(Into::into),
        Role::Web(args) => web::run(args).await.map_err(Into::into),
        Role::Bastion(args) => bastion::run(args).await.map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command line's definition only when it parses one: every role's flags are
    /// checked here, before any role is started.
    #[test]
    fn every_roles_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
