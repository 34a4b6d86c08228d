#!/usr/bin/env bash
# The side-by-side benchmark against PyTorch, both halves in one command (docs/PERFORMANCE.md):
#   bash bench/gpu/run.sh [--size full|tiny] [--device cuda|cpu] [--only LIST] [--out DIR]
# 1. bench/gpu/torch_side.py (python3 with torch, transformers, safetensors; PYTHON overrides) runs every
#    workload in PyTorch, saves the outputs our side is checked against and times them, into DIR
#    (default: a new folder under /tmp);
# 2. bench/gpu/ours.ts checks our outputs against PyTorch's before anything is timed (a failed check
#    names the workload and tensor, is never timed and makes the exit status 1), times the workloads
#    that passed and prints the table; a whole full-size run on CUDA also writes it into
#    docs/PERFORMANCE.md, and DIR/results.json keeps every measurement.
# --only takes comma-separated prefixes of workload ids: matmul, attention/T512, layernorm, chain,
# optimizer, model/small, model/large. --size tiny --device cpu is a correctness check on any machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
command_line="bash bench/gpu/run.sh${*:+ $*}"
size=full device=cuda only="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size | --device | --only | --out)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --size) size=$2 ;;
        --device) device=$2 ;;
        --only) only=$2 ;;
        --out) out=$2 ;;
      esac
      shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$size" in full | tiny) ;; *) echo "run.sh: --size must be full or tiny, got $size" >&2; exit 2 ;; esac
case "$device" in cuda | cpu) ;; *) echo "run.sh: --device must be cuda or cpu, got $device" >&2; exit 2 ;; esac
if ! "${PYTHON:-python3}" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "run.sh: ${PYTHON:-python3} lacks torch, transformers or safetensors (PYTHON=... picks another)" >&2
  exit 1
fi
out=${out:-$(mktemp -d /tmp/bench-gpu.XXXXXX)}
mkdir -p "$out"
only_flag=()
[ -z "$only" ] || only_flag=(--only "$only")
doc_flag=()
# Only a whole run on CUDA replaces the results in docs/PERFORMANCE.md; partial runs print their table.
[ "$size" != full ] || [ "$device" != cuda ] || [ -n "$only" ] || doc_flag=(--doc docs/PERFORMANCE.md)

# Either half exits 1 when a workload failed (PyTorch's side: it skips it and records it in torch.json;
# ours: a failed check) after doing the others; the command's status is then 1.
# On CUDA the run is for a real card: without a hardware WebGPU adapter our half could not run (or would
# run full-size shapes on a software one), so stop before PyTorch's half spends its minutes.
if [ "$device" = cuda ]; then
  adapter=$(deno eval --cached-only 'const a = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
    console.log(!a ? "none" : a.info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|softpipe/i.test(a.info.description + a.info.device) ? "software" : "ok")' 2>/dev/null || echo none)
  if [ "$adapter" != ok ]; then
    echo "run.sh: WebGPU found ${adapter} adapter, not a GPU's: check the Vulkan driver (VK_DRIVER_FILES)" >&2
    exit 1
  fi
fi
status=0
rm -f "$out/torch.json"
"${PYTHON:-python3}" bench/gpu/torch_side.py --out "$out" --size "$size" --device "$device" "${only_flag[@]}" ||
  status=$?
[ -f "$out/torch.json" ] || exit "$status"
BENCH_GPU_COMMAND="$command_line" deno run --cached-only --allow-read --allow-env \
  --allow-write="$out,docs/PERFORMANCE.md" bench/gpu/ours.ts "$out" --json "$out/results.json" \
  "${only_flag[@]}" "${doc_flag[@]}" || { rc=$?; [ "$rc" -le "$status" ] || status=$rc; }
# The table is written unaligned; the formatter keeps `deno fmt --check` (part of `deno task test`) passing.
[ ${#doc_flag[@]} -eq 0 ] || deno fmt --quiet docs/PERFORMANCE.md
echo "reference files and results.json: $out"
exit $status
