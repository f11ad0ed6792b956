//! `cargo xtask bench-peer`: radixserve and llama.cpp's server side by side on the same
//! workloads (both loaded, each workload run on one and then the other), with the table
//! written into docs/benchmarks.md.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

use crate::{cache_dir, cargo, fetch_model, run, workspace_root};

/// Where llama.cpp's server (llama-cpp-python) is installed: `$PEER_DIR`, else the cache.
fn peer_dir() -> Result<PathBuf> {
    match std::env::var("PEER_DIR") {
        Ok(dir) => Ok(PathBuf::from(dir)),
        Err(_) => Ok(cache_dir()?.join("peer-llamacpp")),
    }
}

/// Builds radixserve (release), fetches the model, installs the peer on first use, and runs
/// `bench/peer_bench.py` with `extra` passed through.
pub fn bench_peer(extra: &[String]) -> Result<()> {
    let root = workspace_root();
    let model = build_release_with_model()?;
    let peer = peer_dir()?;
    let python = peer.join("bin").join("python");
    let installed = Command::new(&python)
        .args(["-c", "import llama_cpp.server, httpx"])
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let mut install = Command::new("bash");
        install
            .arg(root.join("bench").join("peer-llamacpp.sh"))
            .arg("install")
            .env("PEER_DIR", &peer);
        run("bench/peer-llamacpp.sh install (builds llama.cpp)", install)?;
    }
    let mut bench = Command::new(&python);
    bench
        .arg(root.join("bench").join("peer_bench.py"))
        .arg("--radixserve")
        .arg(root.join("target").join("release").join("radixserve"))
        .arg("--model")
        .arg(&model)
        .arg("--client-python")
        .arg(&python)
        .args(extra)
        .env("PEER_DIR", &peer)
        .current_dir(&root);
    run("bench/peer_bench.py", bench).context("the side-by-side benchmark")
}

/// Builds radixserve (release), fetches the model and runs `bench/disk_tier_bench.py` (the
/// disk tier: restart restored against cold, and a multi-turn workload 4x the pool) with
/// `extra` passed through; the table goes into docs/benchmarks.md.
pub fn bench_tiers(extra: &[String]) -> Result<()> {
    let root = workspace_root();
    let model = build_release_with_model()?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut bench = Command::new(python);
    bench
        .arg(root.join("bench").join("disk_tier_bench.py"))
        .arg("--radixserve")
        .arg(root.join("target").join("release").join("radixserve"))
        .arg("--model")
        .arg(&model)
        .args(extra)
        .current_dir(&root);
    run("bench/disk_tier_bench.py", bench).context("the disk tier benchmark")
}

/// Builds the release binary and fetches the default model; returns the model's path.
fn build_release_with_model() -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "radixserve-cli"]);
    run("cargo build --release -p radixserve-cli", build)?;
    fetch_model()
}
