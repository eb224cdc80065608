//! Builds `rewriter-ebpf` for `bpfel-unknown-none` with aya-build; the object lands in `OUT_DIR`
//! and `src/lib.rs` embeds it.

use anyhow::{Context as _, anyhow};
use cargo_metadata::MetadataCommand;

fn main() -> anyhow::Result<()> {
    let metadata = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let dir_of = |name: &str| {
        metadata
            .packages
            .iter()
            .find(|p| p.name.as_str() == name)
            .and_then(|p| p.manifest_path.parent().map(|d| d.to_string()))
            .ok_or_else(|| anyhow!("package {name} not found in the workspace"))
    };
    let ebpf_dir = dir_of("rewriter-ebpf")?;
    // The eBPF program also compiles rewriter-common; aya-build only watches the eBPF crate.
    println!("cargo:rerun-if-changed={}", dir_of("rewriter-common")?);
    // The `bench_` programs only when this crate's `bench` feature asks for them.
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH").is_some() {
        &["bench"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "rewriter-ebpf",
            root_dir: &ebpf_dir,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
