#!/usr/bin/env bash
# The GPU check (issue #17): one command on a machine with an NVIDIA GPU, under 8 minutes.
#
#   bash scripts/gpu-check.sh RESULTS_DIR [--dry-run] [--steps env,wheels,tests,small,large,summary]
#   bash scripts/gpu-check.sh --prepare          # on a machine with a registry: fill .whl/ (git-ignored)
#
# Steps, each time-boxed (a step that overruns is stopped and the next one runs):
#   env      what the machine has (python, torch, CUDA, the packages seal needs)
#   wheels   install the wheels carried in .whl/ (no registry there) into a private folder
#   tests    the gpu-marked tests (tests/test_gpu.py)
#   small    bench/inner_loop.py on a random Qwen2.5-0.5B shape, CUDA, bfloat16, K = 1, 5, 10, 25
#   large    the same on a random Qwen2.5-7B shape, as many K of 1, 5, 10, 25 as fit in memory
#   summary  tables, the issue's goals and a paper-sized round's estimate (bench/gpu_summary.py)
# Everything lands in RESULTS_DIR, 8 files (what the device tool brings back from $OUT): gpu-check.log,
# gpu_tests.json (the differences the gpu tests measured), inner_loop_qwen2.5-{0.5b,7b}.{md,json}, summary.{md,json}.
#
# --dry-run checks this script's logic on a CPU in about a minute: the same steps with a tiny shape,
# float32, K = 1, 2 (K = 1 without the baseline for the large step), one epoch; what needs CUDA is skipped
# (the gpu tests skip themselves).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
WHEELS="$ROOT/.whl"
SITE="${SEAL_GPU_SITE:-/tmp/seal-gpu-site}"
SMALL_SHAPE=bench/shapes/qwen2.5-0.5b.json
LARGE_SHAPE=bench/shapes/qwen2.5-7b.json
# Seconds per step: together under 8 minutes with the model builds and loads included.
LIMIT_ENV=20 LIMIT_WHEELS=40 LIMIT_TESTS=130 LIMIT_SMALL=110 LIMIT_LARGE=160 LIMIT_SUMMARY=20

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

# ------------------------------------------------------------------ --prepare: the wheels and data to carry

# seal's runtime needs that the GPU machine lacks, for Python 3.12, with their own needs that it lacks too.
# Versions: those of this development environment (transformers 5.16-5.19 era; TRL 1.16 works with 5.17).
WHEEL_SPECS=(
  pyzmq==27.3.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
)

prepare() {
  mkdir -p "$WHEELS"  # git-ignored (.gitignore: /.whl/)
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "${WHEEL_SPECS[@]}" || exit 1
  # The recorded self-edits the bench trains on, and a real tokenizer (the embedded model's) for the shapes.
  local data="${SEAL_GPU_DATA:-$ROOT/../shared/data/squad/squad_train100_qwen7b_selfedits.json}"
  if [[ -f "$data" ]]; then mkdir -p "$WHEELS/data" && cp "$data" "$WHEELS/data/"; fi
  PYTHONPATH="$ROOT" "$PY" - "$WHEELS/tokenizer" <<'EOF' || echo "no embedded model here: the shapes will train their own tokenizer"
import sys
from library.models import load_tokenizer
load_tokenizer("smollm2-135m-instruct").save_pretrained(sys.argv[1])
EOF
  du -sh "$WHEELS"
}

# ------------------------------------------------------------------ running steps

log() { printf '[%s %4ds] %s\n' "$(date +%H:%M:%S)" "$(($(date +%s) - START))" "$*"; }

step() {  # step NAME LIMIT_S COMMAND...: run it time-boxed, record its status in steps.tsv
  local name=$1 limit=$2
  shift 2
  if [[ ",$STEPS," != *",$name,"* ]]; then return 0; fi
  log "step $name (at most ${limit}s): $*"
  local begun=$SECONDS
  # bash -c: a step may be one of this script's functions (exported below), which timeout cannot run itself.
  timeout --kill-after=15 "$limit" bash -c '"$@"' step "$@"
  local rc=$?
  local status=ok
  [[ $rc -eq 124 || $rc -eq 137 ]] && status=timeout
  [[ $rc -ne 0 && $status == ok ]] && status="failed($rc)"
  printf '%s\t%s\t%ss\n' "$name" "$status" "$((SECONDS - begun))" >> "$STATUS"
  log "step $name: $status in $((SECONDS - begun))s"
}

env_report() {
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| available", torch.cuda.is_available())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", props.name, f"{props.total_memory / 2**30:.0f} GiB")
for name in ["transformers", "peft", "accelerate", "safetensors", "rich", "pytest", "pyzmq", "pydantic",
             "cryptography", "trl", "datasets", "pyarrow", "pandas", "fsspec", "typing_extensions"]:
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} missing")
EOF
}

install_wheels() {
  shopt -s nullglob
  local wheels=("$WHEELS"/*.whl)
  if [[ ${#wheels[@]} -eq 0 ]]; then
    log "no wheels in .whl/: prepare them with 'bash scripts/gpu-check.sh --prepare' (see README, GPU check)"
    return 0
  fi
  log "${#wheels[@]} wheels in .whl/"
  if [[ $DRY -eq 1 ]]; then  # check that the set installs on the GPU machine's Python 3.12, installing nothing
    printf '  %s\n' "${wheels[@]##*/}"
    "$PY" -m pip install --dry-run -q --no-index --no-deps --target "$SITE" --python-version 3.12 --implementation cp \
      --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform any "${wheels[@]}"
    return
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
}

bench() {  # bench NAME SHAPE KS BASELINE_K: one inner-loop run into RESULTS
  local name=$1 shape=$2 ks=$3 baseline_k=$4
  local args=(--data "$DATA" --shape "$shape" --ks "$ks" --out "$RESULTS" --name "inner_loop_$name")
  args+=(--shape-dir "$MODELS/$name")
  [[ -d "$WHEELS/tokenizer" ]] && args+=(--tokenizer "$WHEELS/tokenizer")
  [[ $HAVE_TRL -eq 1 ]] || baseline_k=0
  if [[ $DRY -eq 1 ]]; then
    args+=(--device cpu --dtype float32 --epochs 1 --matmul-seconds 0.2 --baseline-k "$baseline_k" --threads 1)
  else
    args+=(--device cuda --dtype bfloat16 --epochs 10 --matmul-seconds 2 --baseline-k "$baseline_k")
  fi
  "$PY" -m bench.inner_loop "${args[@]}"
}

recorded_data() {  # the bench's data: $SEAL_GPU_DATA, the carried recorded self-edits, or the demo documents
  local carried="$WHEELS/data/squad_train100_qwen7b_selfedits.json"
  local shared="$ROOT/../shared/data/squad/squad_train100_qwen7b_selfedits.json"
  local candidates=("$carried" "$shared")
  [[ -n "${SEAL_GPU_DATA:-}" ]] && candidates=("$SEAL_GPU_DATA")  # SEAL_GPU_DATA=demo: the demo documents
  for file in "${candidates[@]}"; do
    if [[ -f "$file" ]]; then echo "$file"; return; fi
  done
  local demo="${TMPDIR:-/tmp}/seal-gpu-check-demo.json"
  "$PY" - "$demo" <<'EOF'
import json, sys
from library.datasets import DEMO_DOCUMENTS
# 25 self-edits per document: its sentences in 25 rotations, so candidates differ as recorded ones do.
docs = json.loads(DEMO_DOCUMENTS.read_text())
def rotations(text):
    lines = [s.strip() for s in text.split(". ") if s.strip()]
    return ["\n".join(lines[k % len(lines):] + lines[:k % len(lines)]) for k in range(25)]
json.dump([{**d, "completions": rotations(d["context"])} for d in docs], open(sys.argv[1], "w"))
EOF
  echo "$demo"
}

# ------------------------------------------------------------------ main

main() {
  [[ $# -ge 1 ]] || usage
  if [[ $1 == --prepare ]]; then prepare; exit $?; fi
  RESULTS=$1
  shift
  DRY=0
  STEPS=env,wheels,tests,small,large,summary
  while [[ $# -gt 0 ]]; do
    case $1 in
      --dry-run) DRY=1 ;;
      --steps) STEPS=$2; shift ;;
      *) usage ;;
    esac
    shift
  done
  mkdir -p "$RESULTS" || exit 2
  RESULTS="$(cd "$RESULTS" && pwd)"
  STATUS="$(mktemp "${TMPDIR:-/tmp}/seal-gpu-check.XXXXXX")"  # each step's status; kept out of RESULTS
  START=$(date +%s)
  # The random models' folders (15 GB for the 7B shape): in memory where /dev/shm has room, else /tmp.
  MODELS="${SEAL_GPU_MODELS:-/tmp/seal-shapes}"
  local shm_kib
  shm_kib=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
  [[ -z "${SEAL_GPU_MODELS:-}" && $DRY -eq 0 && ${shm_kib:-0} -gt 25000000 ]] && MODELS=/dev/shm/seal-shapes
  export PY WHEELS SITE RESULTS DRY START MODELS
  export -f log env_report install_wheels bench
  # Nothing outside is reachable there: no library should wait on a network call.
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
  export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
  [[ $DRY -eq 1 ]] && export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
  run_steps 2>&1 | tee "$RESULTS/gpu-check.log"
  ! grep -qv $'\tok\t' "$STATUS"
}

run_steps() {
  log "gpu-check into $RESULTS (dry run: $DRY; steps: $STEPS; model folders in $MODELS)"
  step env "$LIMIT_ENV" env_report
  step wheels "$LIMIT_WHEELS" install_wheels
  HAVE_TRL=0
  "$PY" -c "import trl, datasets" 2>/dev/null && HAVE_TRL=1
  [[ $HAVE_TRL -eq 1 ]] || log "no trl/datasets: the benches run without the baseline (no ratio column)"
  DATA="$(recorded_data)"
  export HAVE_TRL DATA
  log "bench data: $DATA"
  export SEAL_GPU_REPORT="$RESULTS/gpu_tests.json"  # the differences the gpu tests measured
  step tests "$LIMIT_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py
  if [[ $DRY -eq 1 ]]; then
    step small "$LIMIT_SMALL" bench qwen2.5-0.5b bench/shapes/tiny.json 1,2 1
    step large "$LIMIT_LARGE" bench qwen2.5-7b bench/shapes/tiny.json 1 0  # the small step checks the baseline
  else
    # The baseline trains one candidate at a time, so its rate does not depend on K: a few candidates give it.
    step small "$LIMIT_SMALL" bench qwen2.5-0.5b "$SMALL_SHAPE" 1,5,10,25 5
    step large "$LIMIT_LARGE" bench qwen2.5-7b "$LARGE_SHAPE" 1,5,10,25 2
  fi
  step summary "$LIMIT_SUMMARY" "$PY" -m bench.gpu_summary "$RESULTS"
  log "done:"
  cat "$STATUS"
}

main "$@"
