"""`sglang.test.test_utils` names used by the peer test files, backed by radixserve."""

import os
import unittest
from typing import Optional, Tuple

import requests

from sglang.test._procs import kill_process_tree  # noqa: F401  (re-exported like SGLang's)
from sglang.test._server import SMALL_MODEL_NAME, ShimLaunchError, launch

# Models. Only the small chat model is available (as the default SmolLM2 GGUF); launching any
# other name raises ShimLaunchError ("needs another model").
DEFAULT_SMALL_MODEL_NAME_FOR_TEST = SMALL_MODEL_NAME
DEFAULT_MODEL_NAME_FOR_TEST = "meta-llama/Llama-3.1-8B-Instruct"
DEFAULT_SMALL_MODEL_NAME_FOR_TEST_BASE = "meta-llama/Llama-3.2-1B"
DEFAULT_SMALL_CROSS_ENCODER_MODEL_NAME_FOR_TEST = "cross-encoder/ms-marco-MiniLM-L6-v2"
DEFAULT_SMALL_EMBEDDING_MODEL_NAME_FOR_TEST = "Alibaba-NLP/gte-Qwen2-1.5B-instruct"
DEFAULT_SMALL_VLM_MODEL_NAME_FOR_TEST = "Qwen/Qwen2.5-VL-3B-Instruct"
DEFAULT_REASONING_MODEL_NAME_FOR_TEST = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"

DEFAULT_TIMEOUT_FOR_SERVER_LAUNCH = 600

# SGLang's local (non-CI) default is port 21000; PEER_SGLANG_PORT overrides it.
DEFAULT_PORT_FOR_SRT_TEST_RUNNER = int(os.environ.get("PEER_SGLANG_PORT", "21000")) - 1000
DEFAULT_URL_FOR_TEST = f"http://127.0.0.1:{DEFAULT_PORT_FOR_SRT_TEST_RUNNER + 1000}"


def is_in_ci() -> bool:
    return False


def is_in_amd_ci() -> bool:
    return False


def popen_launch_server(
    model: str,
    base_url: str,
    timeout: float,
    api_key: Optional[str] = None,
    other_args=None,
    env: Optional[dict] = None,
    return_stdout_stderr: Optional[tuple] = None,
    device: str = "auto",
    pd_separated: bool = False,
    num_replicas: Optional[int] = None,
):
    """Start `radixserve serve` for `model` at `base_url` and wait until it can generate."""
    if pd_separated or num_replicas is not None:
        raise ShimLaunchError("prefill/decode disaggregation and replicas are not supported")
    return launch(
        model,
        base_url,
        timeout,
        api_key=api_key,
        other_args=other_args,
        env=env,
        return_stdout_stderr=return_stdout_stderr,
    )


class CustomTestCase(unittest.TestCase):
    """A plain unittest.TestCase (SGLang's adds CI retries; the peer runs do not retry)."""

    def setUp(self):
        print(f"[Test Method] {self._testMethodName}", flush=True)


def run_logprob_check(self: unittest.TestCase, arg: Tuple):
    """One `/generate` request over `input_len` token ids (0, 1, 2, ...), checking the token
    counts and the logprob arrays the request asked for.

    `arg` = (input_len, output_len, temperature, logprob_start_len, return_logprob,
    top_logprobs_num).
    """
    input_len, output_len, temperature, start, want_logprob, top_n = arg
    body = {
        "input_ids": list(range(input_len)),
        "sampling_params": {
            "temperature": temperature,
            "max_new_tokens": output_len,
            "ignore_eos": True,
        },
        "return_logprob": want_logprob,
        "logprob_start_len": start,
        "top_logprobs_num": top_n,
    }
    meta = requests.post(self.base_url + "/generate", json=body).json()["meta_info"]

    self.assertEqual(meta["prompt_tokens"], input_len)
    self.assertEqual(meta["completion_tokens"], output_len)
    if not want_logprob:
        return

    # Input logprobs cover the prompt from `logprob_start_len` on; outputs cover every token.
    self.assertEqual(start + len(meta["input_token_logprobs"]), meta["prompt_tokens"])
    self.assertEqual(len(meta["output_token_logprobs"]), output_len)
    if not top_n:
        return
    self.assertEqual(start + len(meta["input_top_logprobs"]), meta["prompt_tokens"])
    self.assertEqual(len(meta["output_top_logprobs"]), output_len)
    for pos in range(output_len):
        tops = meta["output_top_logprobs"][pos]
        self.assertEqual(len(tops), top_n)
        if temperature != 0:
            continue
        # Greedy: the sampled token is the most likely one, or tied with it.
        sampled = meta["output_token_logprobs"][pos]
        best = tops[0][0]
        tied = [list(t) for t in tops if t[0] == best]
        self.assertIn(list(sampled), tied)
