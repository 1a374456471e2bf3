#!/usr/bin/env bash
# Spec engine: edeploy vs the python `hardware` library (eDeploy's successor), in one run.
# Needs the release build (make bench builds it) and PyPI for the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/spec
mkdir -p "$out"
python3 bench/gen_fixtures.py "$out"
venv=bench/.venv
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q 'hardware==0.33.0' >/dev/null
cargo run -q --release -p edeploy-spec --example spec_bench -- "$out" > "$out/edeploy.jsonl"
# The python matcher backtracks exponentially: cap each case (PY_TIMEOUT seconds) and stop the
# adversarial series at k=3.
"$venv/bin/python" bench/py_spec.py "$out" 3 "${PY_TIMEOUT:-60}" > "$out/python.jsonl"
echo "## spec engine: 425-line hardware list; 50 profiles x 30 specs (49 decoys); decoy failing after k bindings; generate() of 10,000 entries"
python3 bench/table.py "$out/edeploy.jsonl" "$out/python.jsonl" "python hardware 0.33.0"
