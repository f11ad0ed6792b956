"""`get_tokenizer`: a tokenizer backed by the running radixserve's `/tokenize` and
`/detokenize`, so that token counts and ids agree with the server under test by construction
(the GGUF carries the tokenizer; no Hugging Face download is needed)."""

from sglang.test._server import ServerTokenizer


def get_tokenizer(tokenizer_name, *args, **kwargs):
    return ServerTokenizer(tokenizer_name)
