#!/usr/bin/env python3
"""Writes Q8_0 and Q4_K_M versions of a GGUF model with llama.cpp's own quantizer (through
llama-cpp-python, the peer bench/peer-llamacpp.sh installs), for the per-quantisation figures
in docs/benchmarks.md. The source is requantized as it is (`allow_requantize`): from the default
Q4_1 file the weights keep Q4_1's rounding, which leaves the speed of each format unchanged.

Usage: ~/.cache/radixserve/peer-llamacpp/bin/python bench/requantize.py SOURCE.gguf OUT_DIR
"""
import ctypes
import os
import sys

import llama_cpp

TYPES = {"Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}


def main():
    source, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(source))[0].rsplit(".", 1)[0]
    for name, ftype in TYPES.items():
        out = os.path.join(out_dir, f"{stem}.{name}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params))
        if rc != 0:
            raise SystemExit(f"quantizing to {name} failed ({rc})")
        print(out)


if __name__ == "__main__":
    main()
