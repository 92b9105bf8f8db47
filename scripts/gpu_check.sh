#!/usr/bin/env bash
# On a machine with one CUDA GPU and torch/torchvision/safetensors/pytest already installed (nothing new is
# installed; diffusers and kornia wheels may be put on PYTHONPATH beforehand): run every test marked `cuda` and the
# three GPU benchmarks (IPMix vs torchvision AugMix and kornia, DiffAug vs a bare denoiser forward, robaug's sampler vs
# diffusers' loop), and write ONE JSON with both. Budget: under 8 minutes.
#   bash scripts/gpu_check.sh [OUT_DIR]       -> OUT_DIR/gpu_check.json (default: outputs/gpu_check)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-outputs/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible: gpu_check needs one')" || exit 2

timeout 300 "$PY" -m pytest tests -m cuda -p no:cacheprovider -q -rA --junitxml="$OUT/cuda_tests.xml" \
  -o addopts="" 2>&1 | tee "$OUT/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout 240 "$PY" benchmarks/gpu_bench.py --device cuda --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}

"$PY" - "$OUT" "$tests_rc" "$bench_rc" <<'PYEOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, tests_rc, bench_rc = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tests = []
if (out / "cuda_tests.xml").is_file():
    for case in ET.parse(out / "cuda_tests.xml").iter("testcase"):
        status = "passed"
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                msg = (el.get("message") or "")[:500]
                break
        else:
            msg = ""
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status,
                      "seconds": float(case.get("time") or 0), "message": msg})
bench = json.loads((out / "gpu_bench.json").read_text()) if (out / "gpu_bench.json").is_file() else None
summary = {s: sum(t["status"] == s for t in tests) for s in ("passed", "failed", "error", "skipped")}
res = {"tests_rc": tests_rc, "bench_rc": bench_rc, "summary": summary, "tests": tests, "benchmarks": bench}
(out / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
print(json.dumps({"summary": summary, "tests_rc": tests_rc, "bench_rc": bench_rc}))
PYEOF
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
