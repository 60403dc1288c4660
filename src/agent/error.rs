//! The agent's own error type: what Docker, the firewall and the API server say, with their
//! sources kept. Docker's errors stay here: no other role sees a bollard type.

/// What can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker: {0}")]
    Docker(#[source] bollard::errors::Error),

    #[error("could not pull image {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("container {0} disappeared while it was being set up")]
    Gone(String),

    #[error("{0}")]
    VolumeConflict(String),

    #[error("servers' firewall: {0}")]
    Firewall(String),

    #[error("snapshot: {0}")]
    Copy(#[source] super::copy::Error),

    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    #[error("{0}")]
    Config(String),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// What the modules every role shares refuse: the client's configuration, the listening
    /// address, the user CA keys.
    #[error(transparent)]
    Shared(#[from] crate::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
