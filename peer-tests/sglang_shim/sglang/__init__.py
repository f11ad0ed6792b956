"""A stand-in for the `sglang` package, written for radixserve's peer-test harness.

It provides only the names that the SGLang test files in `peer-tests/suites.toml` import, with
the same call signatures, so those files run unmodified against a radixserve server. Nothing
here is SGLang's code: the launcher starts `radixserve serve`, the tokenizer asks the running
server, and the CI helpers are no-ops. See `peer-tests/README.md` for the flag translations.
"""

__version__ = "0.0.0+radixserve-shim"
