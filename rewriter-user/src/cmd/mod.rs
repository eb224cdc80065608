//! One module per subcommand.

pub mod attach;
pub mod check;
pub mod contact;
pub mod default;
pub mod detach;
pub mod options;
pub mod rewrite;
pub mod stats;
pub mod status;

/// A usage error found after argument parsing (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand: `Err(usage("..."))?`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}
