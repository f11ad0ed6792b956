"""SGLang's custom logit processors are Python callables shipped to the server inside a
request (`custom_logit_processor`), and the server runs them on its logits tensor.

radixserve runs no Python, so a processor can never take effect there. This class keeps the
tests importable and lets them build the request they would send: `to_str()` gives a JSON
string naming the class, so the server sees a request carrying a processor and must answer it
(by refusing it, or by ignoring it, which the tests then detect).
"""

import json


class CustomLogitProcessor:
    """Base class of a user-defined logit processor (subclasses define `__call__`)."""

    def __call__(self, logits, custom_param_list=None):
        raise NotImplementedError

    @classmethod
    def to_str(cls) -> str:
        return json.dumps(
            {
                "callable": f"python:{cls.__module__}.{cls.__qualname__}",
                "note": "serialized by the radixserve peer-test shim; not executable",
            }
        )

    @classmethod
    def from_str(cls, text: str):
        raise NotImplementedError(
            "the radixserve peer-test shim cannot rebuild a logit processor"
        )
