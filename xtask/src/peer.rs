//! `cargo xtask peer-tests [ARGS]`: SGLang's and llama.cpp's public API test suites, run
//! unmodified against radixserve (see `peer-tests/README.md`).
//!
//! Builds the release binary (unless `--bin` is given), fetches the default model (unless
//! `--model` is given), and runs `peer-tests/run.py` with them; every other argument goes to
//! run.py (`--only SUITE`, `-k EXPR`, `--suites DIR`, `-- PYTEST_ARGS`, ...).

use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

/// Whether `args` already carries `flag` (as `flag VALUE` or `flag=VALUE`).
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter()
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
}

/// The release binary cargo builds (honouring `CARGO_TARGET_DIR`).
fn release_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("release").join("radixserve")
}

pub fn peer_tests(extra: &[String]) -> Result<()> {
    let root = crate::workspace_root();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.current_dir(&root)
        .arg(root.join("peer-tests").join("run.py"));
    if !has_flag(extra, "--bin") {
        let mut build = crate::cargo();
        build.args(["build", "--release", "-p", "radixserve-cli"]);
        crate::run("cargo build --release -p radixserve-cli", build)?;
        cmd.arg("--bin").arg(release_binary());
    }
    if !has_flag(extra, "--model") {
        cmd.arg("--model").arg(crate::fetch_model()?);
    }
    cmd.args(extra);
    crate::run("peer-tests/run.py", cmd)
}
