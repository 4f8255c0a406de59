//! The one error type of the lab crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a topology or running a lab.
///
/// Variants carry the file, field, command or node at fault so a message alone is enough to
/// find the problem.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// File that could not be read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// The topology file is not valid TOML or does not match the schema.
    #[error("{location}: {message}")]
    Parse {
        /// `file:line:col` (or `file` when toml gave no position).
        location: String,
        /// What the parser said.
        message: String,
    },

    /// The topology parsed but is inconsistent (unknown node, duplicate name, bad address...).
    #[error("{location}: {field}: {message}")]
    Invalid {
        /// `file:line:col` of the offending value, or `<topology>` when unknown.
        location: String,
        /// Path of the offending field, e.g. `link[2].b`.
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A lab needs root to create network namespaces.
    #[error("building a lab needs root (network namespaces and veth links); run as root")]
    NeedsRoot,

    /// A lab with this name already has namespaces, links or a state file.
    #[error(
        "lab `{name}` is already up ({what}); run `switchboard lab down {name}` or set replace = true"
    )]
    AlreadyUp {
        /// Lab name.
        name: String,
        /// What was found (a namespace, link or state file).
        what: String,
    },

    /// An external command (`ip`, `ethtool`, `sysctl`, ...) exited with failure.
    #[error("`{command}` failed for {context} ({status}): {stderr}")]
    Command {
        /// The command line as run.
        command: String,
        /// The node, link or interface being worked on.
        context: String,
        /// Exit status text.
        status: String,
        /// Trimmed standard error of the command.
        stderr: String,
    },

    /// An external command could not be started at all.
    #[error("cannot run `{command}` for {context}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The node, link or interface being worked on.
        context: String,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// A node name does not exist in this lab, or is the wrong kind for the call.
    #[error("lab `{lab}` has no {kind} named `{node}`")]
    NoSuchNode {
        /// Lab name.
        lab: String,
        /// `host` or `switch`.
        kind: &'static str,
        /// The name asked for.
        node: String,
    },

    /// The per-lab state file could not be read or written.
    #[error("lab state file {}: {message}", path.display())]
    State {
        /// Path of the state file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The caller-supplied switch launcher failed.
    #[error("starting switch `{switch}`: {message}")]
    Launch {
        /// Switch node name.
        switch: String,
        /// What went wrong.
        message: String,
    },

    /// Teardown left something behind; each entry names one leftover and why.
    #[error("teardown of lab `{lab}` incomplete: {}", problems.join("; "))]
    Teardown {
        /// Lab name.
        lab: String,
        /// One message per failure.
        problems: Vec<String>,
    },
}

/// Result alias for this crate.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
