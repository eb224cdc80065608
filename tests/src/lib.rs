pub mod bpf_lines;
pub mod chain;
pub mod cli;
pub mod foreign;
pub mod fuzz;
pub mod kernel;
pub mod net;
pub mod packet;
pub mod registrar;
pub mod sipp;

/// The Contact header line of a SIP message (empty if none).
pub fn contact_of(msg: &[u8]) -> String {
    String::from_utf8_lossy(msg)
        .split("\r\n")
        .find(|l| l.starts_with("Contact:"))
        .unwrap_or_default()
        .to_owned()
}
