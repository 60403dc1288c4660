//! compute-server: self-service compute servers on Kubernetes and Docker.
//!
//! The Kubernetes API is the control plane and the database (the types in [`api`]);
//! Docker on each labelled node is the data plane. One binary runs every role.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod bastion;
pub mod crd;
pub mod kube_client;
#[cfg(test)]
pub mod mock_api;
pub mod runtime;
pub mod scheduler;
pub mod ssh_ca;
pub mod storage;
pub mod telemetry;
pub mod web;

/// Errors of the binary's roles.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not render the CRDs as YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),

    #[error("could not write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Config(String),

    #[error("could not serve on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    #[error("leader election: {0}")]
    Leader(String),

    #[error("user CA keys in {path}: {reason}")]
    UserCa {
        path: std::path::PathBuf,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
