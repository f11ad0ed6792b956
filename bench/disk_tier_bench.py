#!/usr/bin/env python3
"""Benchmarks of radixserve's disk tier (--kv-cache-dir), written into docs/benchmarks.md
between the markers `<!-- bench-tiers:start -->` and `<!-- bench-tiers:end -->`.

  restart   workload A (one ~1,000-token system prompt, shared_prefix_client.py's "shared"):
            the first request's time to first token right after a restart, with the cache
            restored from the directory against a cold start (an empty directory).
  turns     a multi-turn chat workload whose working set is 4x the in-memory pool:
            conversations with their own ~500-token system prompts, served round-robin,
            each turn resending the whole history. Prefix hit rate and throughput with and
            without the disk tier, on the same pool.

One server at a time; only the standard library (the prompts come from
shared_prefix_client.py, imported without its httpx dependency).

Usage (normally through `cargo xtask bench-tiers`):
  disk_tier_bench.py --radixserve BIN --model GGUF [--repeats 3] [--conversations 8 --turns 4]
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
START, END = "<!-- bench-tiers:start -->", "<!-- bench-tiers:end -->"
sys.path.insert(0, HERE)
from shared_prefix_client import build_requests, make_catalogue  # noqa: E402


def cpu_description():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        name = m.group(1).strip() if m else "unknown CPU"
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(flags.group(1).split()) if flags else set()
        simd = [f for f in ("avx512bw", "avx512_vnni", "avx2") if f in flags]
        return f"{name}, {os.cpu_count()} vCPU, {'/'.join(simd) or 'no AVX2'}"
    except OSError:
        return "unknown CPU"


class Server:
    def __init__(self, args, port, extra, memory=None):
        self.port = port
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            raise SystemExit(f"port {port} already answers: stop that server first")
        except OSError:
            pass
        self.log = open(os.path.join(tempfile.gettempdir(), f"radixserve-bench-{port}.log"), "w")
        cmd = [args.radixserve, "serve", "--model", args.model, "--port", str(port),
               "--kv-cache-memory", str(memory or args.kv_cache_memory)] + extra
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"radixserve exited early; see {self.log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                models = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models").read()
                self.model = json.loads(models)["data"][0]["id"]
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit("radixserve did not start")

    def stop(self):
        """SIGTERM: a graceful shutdown, which writes the snapshot."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=300)
        self.log.close()

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics").read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("radixserve_"):
                name, value = line.split(" ", 1)
                out[name[len("radixserve_"):]] = float(value)
        return out

    def chat(self, messages, max_tokens):
        """Streams one greedy chat completion; returns (ttft seconds, text, total seconds)."""
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": 0, "stream": True}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        t0 = time.time()
        ttft, text = None, []
        with urllib.request.urlopen(req, timeout=600) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                delta = json.loads(line[6:])["choices"][0]["delta"]
                piece = delta.get("content")
                if piece:
                    if ttft is None:
                        ttft = time.time() - t0
                    text.append(piece)
        return ttft if ttft is not None else time.time() - t0, "".join(text), time.time() - t0


def restart_bench(args, port):
    """First-request TTFT on workload A after a restart: restored vs cold."""
    reqs = build_requests("shared", 2, args.items)
    warm_msgs = [{"role": "system", "content": reqs[0][0]}, {"role": "user", "content": reqs[0][1]}]
    probe = [{"role": "system", "content": reqs[1][0]}, {"role": "user", "content": reqs[1][1]}]
    restored, cold, texts = [], [], set()

    def first_request(warm):
        # A fresh directory; with `warm`, a first server caches the system prompt and stops.
        d = tempfile.mkdtemp(prefix="radixserve-tier-")
        try:
            if warm:
                s = Server(args, port, ["--kv-cache-dir", d], args.restart_memory)
                s.chat(warm_msgs, 8)
                s.stop()
            s = Server(args, port, ["--kv-cache-dir", d], args.restart_memory)
            ttft, text, _ = s.chat(probe, 16)
            s.stop()
            texts.add(text)
            return ttft
        finally:
            shutil.rmtree(d, ignore_errors=True)

    for _ in range(args.repeats):
        restored.append(first_request(True))
        cold.append(first_request(False))
    return {"restored_ttft": statistics.median(restored), "cold_ttft": statistics.median(cold),
            "same_text": len(texts) == 1}


def turns_bench(args, port, tier):
    """Round-robin multi-turn chats over a pool a quarter of their working set."""
    systems = [make_catalogue(500 + c, args.items // 2)[0] for c in range(args.conversations)]
    history = [[{"role": "system", "content": s}] for s in systems]
    d = tempfile.mkdtemp(prefix="radixserve-tier-")
    extra = ["--kv-cache-dir", d] if tier else []
    try:
        s = Server(args, port, extra)
        t0 = time.time()
        n = 0
        for turn in range(args.turns):
            for c in range(args.conversations):
                history[c].append({"role": "user",
                                   "content": f"Turn {turn}: which item is the cheapest, and why?"})
                _, text, _ = s.chat(history[c], 16)
                history[c].append({"role": "assistant", "content": text})
                n += 1
        wall = time.time() - t0
        m = s.metrics()
        s.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"wall": wall, "requests": n,
            "hit_rate": m["prefix_cache_hit_tokens_total"] / max(1.0, m["prefix_cache_query_tokens_total"]),
            "disk_hit_tokens": m.get("disk_hit_tokens_total", 0.0),
            "computed": m["computed_tokens_total"]}


def write_table(args, r, t_off, t_on):
    ratio = r["cold_ttft"] / r["restored_ttft"]
    pool_tokens = args.kv_cache_memory * (1 << 20) // 23040
    lines = [
        START,
        f"Measured {datetime.date.today().isoformat()} on {cpu_description()} with "
        f"`cargo xtask bench-tiers` (SmolLM2-135M-Instruct Q4_1, f16 K/V, "
        f"a pool of {args.restart_memory} MiB for the restart and of {args.kv_cache_memory} MiB, about "
        f"{pool_tokens} tokens, for the multi-turn run).",
        "",
        "| measure | without the disk tier | with the disk tier | ratio |",
        "| --- | --- | --- | --- |",
        f"| A: first request after a restart, time to first token (median of {args.repeats}) | "
        f"{r['cold_ttft']:.3f} s (cold) | {r['restored_ttft']:.3f} s (restored) | {ratio:.1f}x |",
        f"| multi-turn, working set 4x the pool: prefix hit rate | {t_off['hit_rate']:.2f} | "
        f"{t_on['hit_rate']:.2f} | |",
        f"| multi-turn: tokens computed | {t_off['computed']:.0f} | {t_on['computed']:.0f} | "
        f"{t_off['computed'] / max(1.0, t_on['computed']):.2f}x fewer |",
        f"| multi-turn: throughput ({t_on['requests']} requests) | "
        f"{t_off['requests'] / t_off['wall']:.2f} req/s | {t_on['requests'] / t_on['wall']:.2f} req/s | "
        f"{t_off['wall'] / t_on['wall']:.2f}x |",
        "",
        f"Greedy output of the probe request identical restored and cold: {r['same_text']}. "
        f"Prompt tokens served from disk in the multi-turn run: {t_on['disk_hit_tokens']:.0f}.",
        END,
    ]
    doc = open(DOC).read()
    block = "\n".join(lines)
    if START in doc and END in doc:
        doc = doc[:doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n## Disk tier\n\n" + block + "\n"
    open(DOC, "w").write(doc)
    print(block)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--radixserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=18411)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--items", type=int, default=27)
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--restart-memory", type=int, default=128,
                    help="MiB of K/V pool for the restart measurement")
    ap.add_argument("--kv-cache-memory", type=int, default=24,
                    help="MiB of K/V pool (24 MiB ~ 1,090 tokens: a quarter of the multi-turn working set)")
    args = ap.parse_args()
    r = restart_bench(args, args.port)
    print("restart:", r, flush=True)
    t_off = turns_bench(args, args.port, False)
    print("turns without the tier:", t_off, flush=True)
    t_on = turns_bench(args, args.port, True)
    print("turns with the tier:", t_on, flush=True)
    write_table(args, r, t_off, t_on)


if __name__ == "__main__":
    main()
