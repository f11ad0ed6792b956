#!/usr/bin/env python3
"""Side-by-side benchmark of radixserve and llama.cpp's server on the same workloads.

Loads both servers on the same GGUF file and runs the workloads of shared_prefix_client.py on
one and then the other (never both at once; the decode runs alternate), then writes a table
of ratios into docs/benchmarks.md between the markers `<!-- bench-peer:start -->` and
`<!-- bench-peer:end -->`.

  A  one ~1,000-token system prompt shared by every request
  B  four such prompts interleaved
  C  no shared prefix
  batch32 workload A's prompt, 32 clients at once: aggregate output tokens/s, set against
          the peer's batch-1 decode
  decode  one client on workload A: per-request decode tokens/s at ~1k context, the best of
          --decode-repeats runs for each server (a shared machine's neighbours slow single runs
          down by up to 1.7x; the best run is each server's own rate)
  RSS     resident memory of each server after its runs

Usage (normally through `cargo xtask bench-peer`):
  peer_bench.py --radixserve BIN --model GGUF --peer-python PY [--requests 32] [--workloads A,batch32,B,C,decode]
"""
import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLIENT = os.path.join(HERE, "shared_prefix_client.py")
PEER_SH = os.path.join(HERE, "peer-llamacpp.sh")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
START, END = "<!-- bench-peer:start -->", "<!-- bench-peer:end -->"

WORKLOADS = {
    "A": ("shared", 4),
    "B": ("multi", 4),
    "C": ("distinct", 4),
    "batch32": ("shared", 32),
    "decode": ("shared", 1),
}


def cpu_description():
    name, flags = platform.processor() or "unknown CPU", ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        name = m.group(1).strip() if m else name
        fl = re.search(r"^flags\s*:\s*(.+)$", text, re.M).group(1).split()
        isa = [x for x in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni") if x in fl]
        flags = ", ".join(isa)
    except (OSError, AttributeError):
        pass
    return f"{name} ({os.cpu_count()} vCPU; {flags})"


def wait_ready(port, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        for path in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
        time.sleep(1)
    raise SystemExit(f"server on port {port} not ready after {timeout} s")


def rss_mib(pid):
    """Resident memory of `pid` and its children, MiB."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def start(server, args, port):
    if server == "radixserve":
        cmd = [args.radixserve, "serve", "--model", args.model, "--port", str(port)]
    else:
        cmd = ["bash", PEER_SH, "serve", str(port), args.model]
    log = open(os.path.join(args.out_dir, f"{server}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_ready(port, proc)
    return proc


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_client(server, args, port, key, suffix=""):
    workload, conc = WORKLOADS[key]
    requests = args.decode_requests if key == "decode" else args.requests
    out = os.path.join(args.out_dir, f"{server}-{key}{suffix}.json")
    cmd = [args.client_python, CLIENT, "--base-url", f"http://127.0.0.1:{port}",
           "--workload", workload, "--concurrency", str(conc), "--requests", str(requests),
           "--max-tokens", str(args.max_tokens), "--out", out, "--label", f"{server} {key}",
           "--max-seconds", str(args.max_seconds)]
    if server == "llama.cpp":
        cmd += ["--extra-json", json.dumps({"repeat_penalty": 1.0})]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return load_summary(out)


def best_of(runs):
    """The decode run with the best per-request rate, with every run's rate in
    `runs_tok_per_s` and the first run's (the only cold) time to first token."""
    best = dict(max(runs, key=lambda r: r["per_request_decode_tok_per_s_mean"]))
    best["runs_tok_per_s"] = [r["per_request_decode_tok_per_s_mean"] for r in runs]
    best["first_ttft_s"] = runs[0]["first_ttft_s"]
    return best


def load_summary(path):
    """A run's summary, plus the time to first token of its first request."""
    with open(path) as f:
        data = json.load(f)
    summary = data["summary"]
    first = (data.get("requests") or [{}])[0]
    summary["first_ttft_s"] = first.get("ttft_s")
    return summary


def reload(args):
    """The results of an earlier run, from the files it left in --out-dir."""
    with open(os.path.join(args.out_dir, "results.json")) as f:
        results = json.load(f)
    for server, runs in results.items():
        for key in args.workloads:
            if key == "decode":
                continue  # kept whole in results.json: the best of several runs
            path = os.path.join(args.out_dir, f"{server}-{key}.json")
            if os.path.exists(path):
                runs[key] = load_summary(path)
    return results


def bench(args):
    """Both servers loaded side by side; each workload runs on one and then on the other
    (never both at once), and the decode runs alternate between them, so that a neighbour
    slowing the shared machine down for a while hits both servers alike."""
    os.makedirs(args.out_dir, exist_ok=True)
    servers = (("radixserve", 30411), ("llama.cpp", 30412))
    procs = {}
    results = {server: {} for server, _ in servers}
    try:
        for server, port in servers:
            procs[server] = start(server, args, port)
        for key in args.workloads:
            repeats = args.decode_repeats if key == "decode" else 1
            runs = {server: [] for server, _ in servers}
            for i in range(repeats):
                suffix = f"-{i}" if key == "decode" else ""
                for server, port in servers:
                    runs[server].append(run_client(server, args, port, key, suffix))
            for server, _ in servers:
                results[server][key] = best_of(runs[server]) if key == "decode" else runs[server][0]
            print(f"{key}: done", file=sys.stderr)
        for server, _ in servers:
            results[server]["rss_mib"] = rss_mib(procs[server].pid)
    finally:
        for proc in procs.values():
            stop(proc)
    return results


def table(results, args):
    ours, peer = results["radixserve"], results["llama.cpp"]
    rows = ["| measure | radixserve | llama.cpp | ratio (higher is better for radixserve) |",
            "| --- | --- | --- | --- |"]
    names = {"A": "A: one shared ~1,000-token system prompt, wall time",
             "B": "B: four interleaved system prompts, wall time",
             "C": "C: no shared prefix, wall time"}
    for k in ("A", "B", "C"):
        if k in ours and k in peer:
            a, b = ours[k]["wall_s"], peer[k]["wall_s"]
            rows.append(f"| {names[k]} | {a:.1f} s | {b:.1f} s | {b / a:.2f}x |")
    for k, label in (("A", "A: time to first token, later requests (mean)"),):
        if k in ours and k in peer:
            a, b = ours[k]["ttft_mean_later_requests_s"], peer[k]["ttft_mean_later_requests_s"]
            rows.append(f"| {label} | {a:.2f} s | {b:.2f} s | {b / a:.2f}x |")
    if "decode" in ours and "decode" in peer:
        a, b = ours["decode"].get("first_ttft_s"), peer["decode"].get("first_ttft_s")
        if a and b:
            rows.append(f"| prefill: first token of a cold ~1,050-token prompt (decode run, first request) | {a:.2f} s | {b:.2f} s | {b / a:.2f}x |")
        a = ours["decode"]["per_request_decode_tok_per_s_mean"]
        b = peer["decode"]["per_request_decode_tok_per_s_mean"]
        n = len(peer["decode"].get("runs_tok_per_s", [b]))
        rows.append(f"| decode tokens/s per request at ~1k context, 1 client (best of {n} runs) | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    if "batch32" in ours and "batch32" in peer:
        a, b = ours["batch32"]["output_tok_per_s"], peer["batch32"]["output_tok_per_s"]
        rows.append(f"| 32 clients at once on A's prompt (cached), output tokens/s | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
        if "decode" in peer:
            d = peer["decode"]["per_request_decode_tok_per_s_mean"]
            rows.append(f"| the same against llama.cpp's batch-1 decode | {a:.1f} | {d:.1f} | {a / d:.2f}x |")
            # Decode alone: the 32 requests' own decode rates (tokens after the first over the
            # time after the first) added up, without the prefill of their questions.
            agg = ours["batch32"]["per_request_decode_tok_per_s_mean"] * ours["batch32"]["ok"]
            rows.append(f"| 32 clients: aggregate decode tokens/s (the requests' decode rates added up), against llama.cpp's batch-1 decode | {agg:.1f} | {d:.1f} | {agg / d:.2f}x |")
    if "A" in ours and "A" in peer:
        a, b = ours["A"]["output_tok_per_s"], peer["A"]["output_tok_per_s"]
        rows.append(f"| A: output tokens/s, 4 clients | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    a, b = ours["rss_mib"], peer["rss_mib"]
    rows.append(f"| server RSS after the runs | {a:.0f} MiB | {b:.0f} MiB | {b / a:.2f}x |")
    errors = sum(r.get("errors", 0) for s in results.values() for r in s.values() if isinstance(r, dict))
    head = (f"Measured {datetime.date.today().isoformat()} on {cpu_description()}, both servers "
            f"loaded and each workload run on one then the other (decode runs alternating), on the same GGUF file ({os.path.basename(args.model)}), chat API, greedy, "
            f"{args.requests} requests of {args.max_tokens} tokens (decode: {args.decode_requests} "
            f"requests, 1 client, best of {args.decode_repeats} runs each); llama.cpp gets `repeat_penalty: 1.0` so both sample alike. "
            f"Failed requests: {errors}. Command: `cargo xtask bench-peer`.")
    return head + "\n\n" + "\n".join(rows) + "\n"


def write_doc(text):
    with open(DOC) as f:
        doc = f.read()
    block = f"{START}\n{text}{END}"
    if START in doc and END in doc:
        doc = doc[:doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc += f"\n## Side by side with llama.cpp's server\n\n{block}\n"
    with open(DOC, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--radixserve", required=True, help="the radixserve binary")
    ap.add_argument("--model", required=True, help="GGUF file both servers load")
    ap.add_argument("--client-python", default=sys.executable, help="a Python with httpx")
    ap.add_argument("--workloads", default="A,batch32,B,C,decode")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--decode-requests", type=int, default=4)
    ap.add_argument("--decode-repeats", type=int, default=3,
                    help="decode runs per server; the table takes each server's best")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "target", "bench-peer"))
    ap.add_argument("--no-doc", action="store_true", help="print the table, leave docs alone")
    ap.add_argument("--from-results", action="store_true",
                    help="run nothing: rebuild the table from the files an earlier run left in --out-dir")
    args = ap.parse_args()
    args.workloads = [w for w in args.workloads.split(",") if w]
    for w in args.workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r} (A, B, C, batch32, decode)")
    if args.from_results:
        results = reload(args)
    else:
        results = bench(args)
        with open(os.path.join(args.out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    text = table(results, args)
    print(text)
    if not args.no_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
