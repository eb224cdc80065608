//! Configuration file parsing and input validation for the `sip-rewriter` CLI.
//!
//! Everything an administrator types (config file, contacts file, command-line values) goes
//! through the `validate_*` functions before it reaches the kernel maps, because the kernel
//! splices DNs and URIs into SIP headers verbatim: a stray CR/LF in a Contact URI would inject
//! headers into every REGISTER.
//!
//! One file per concern: [`error`] (the error shapes), [`validate`] (single values),
//! [`keep`] (the keep list), [`template`] (the default Contact), [`csv`] (contacts files) and
//! [`file`](mod@file) (the TOML config file and the [`Settings`] it makes). Everything is
//! re-exported here.

pub mod csv;
pub mod error;
pub mod file;
pub mod keep;
pub mod template;
#[cfg(test)]
mod testing;
pub mod validate;

pub use csv::{parse_contacts_csv, read_contacts_file};
pub use error::{ConfigError, Field, Reason, ValidationError, Value};
pub use file::{
    DEFAULT_INTERVAL, MAX_CONTACTS_RANGE, MAX_INTERVAL, MAX_REGISTRATIONS_RANGE, Settings, changes,
    read_config_bytes,
};
pub use keep::KeepParams;
pub use template::{DN_PLACEHOLDER, Template};
pub use validate::{
    MAX_IFNAME_LEN, parse_listen_addr, validate_dn, validate_interface, validate_keep_name,
    validate_port, validate_range, validate_uri,
};
