"""Smoke test of the official `openai` Python client against a running radixserve server.

Usage: python3 openai_smoke.py http://127.0.0.1:PORT/v1
"""
import sys

import openai

client = openai.OpenAI(base_url=sys.argv[1], api_key="unused")

models = client.models.list()
model = models.data[0].id

completion = client.completions.create(
    model=model, prompt="The sky is", max_tokens=4, temperature=0
)
assert completion.choices[0].finish_reason in ("length", "stop"), completion
assert completion.usage.completion_tokens <= 4, completion.usage

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say one word."}],
    max_tokens=4,
    temperature=0,
)
assert chat.choices[0].message.role == "assistant", chat

again = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Say one word."}],
    max_tokens=4,
    temperature=0,
)
assert again.usage.prompt_tokens_details.cached_tokens > 0, again.usage
assert again.choices[0].message.content == chat.choices[0].message.content

pieces = []
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to three."}],
    max_tokens=6,
    temperature=0,
    stream=True,
    stream_options={"include_usage": True},
)
usage = None
for chunk in stream:
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
    if chunk.usage is not None:
        usage = chunk.usage
assert usage is not None and usage.completion_tokens <= 6, usage

try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError:
    pass

print("openai client smoke test passed:", repr("".join(pieces)))
