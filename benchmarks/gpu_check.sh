#!/usr/bin/env bash
# The GPU check: our evaluator's generation schedules (token identity, tokens/s), the TOFU suite, one IMU and one NPO
# step in bf16 over fp32 master weights, and with two GPUs the 2-process evaluation against the 1-process one.
# Nothing is downloaded; see benchmarks/gpu_check.py for what is built and what the JSON holds.
#
#   bash benchmarks/gpu_check.sh                         # GPU: writes benchmarks/results/gpu_check.json (< 8 min)
#   bash benchmarks/gpu_check.sh --dry-run --output x.json   # CPU, tiny model: checks the script in seconds
#   bash benchmarks/gpu_check.sh --tokenizer path/to/smollm2   # a local tokenizer folder (realistic LM-head size)
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false
exec timeout 480 python benchmarks/gpu_check.py "$@"
