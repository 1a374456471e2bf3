#!/usr/bin/env bash
# Times `edeploy detect` on this machine, side by side with eDeploy's successor, python
# `hardware-detect` (PyPI `hardware`, pinned), and prints a small table.
#
#   make release && bash bench/detect.sh
#
# Builds nothing: it uses target/release/edeploy (or $EDEPLOY_BIN). Uses hyperfine when installed
# (apt-get install hyperfine), else a shell loop. The python tool is installed into bench/.venv on
# first use; when it cannot run here (no venv/pip, no lshw, not root) the table says why.
# Budget: `edeploy detect` must stay under 20 ms (mean); the script exits 1 when it does not.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${EDEPLOY_BIN:-target/release/edeploy}
RUNS=${RUNS:-200}
RUNS_PY=${RUNS_PY:-10}
BUDGET_MS=20
VENV=bench/.venv
HARDWARE_VERSION=0.33.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$BIN" ]; then
  echo "bench/detect.sh: $BIN not found: run 'make release' first" >&2
  exit 1
fi
if ! "$BIN" detect > "$work/edeploy.json"; then
  echo "bench/detect.sh: '$BIN detect' failed" >&2
  exit 1
fi
edeploy_lines=$(grep -c '^  \[' "$work/edeploy.json")

# BENCH_TIMER=loop forces the shell loop (to compare, or to test it).
have_hyperfine() { [ "${BENCH_TIMER:-}" != loop ] && command -v hyperfine > /dev/null; }

# time NAME RUNS CMD...: prints "mean min max" in ms.
time_cmd() {
  local name=$1 runs=$2
  shift 2
  if have_hyperfine; then
    hyperfine -N --warmup 3 --runs "$runs" --export-csv "$work/$name.csv" "$*" > /dev/null 2>&1 ||
      return 1
    # command,mean,stddev,median,user,system,min,max (seconds)
    awk -F, 'NR == 2 { printf "%.2f %.2f %.2f\n", $2 * 1000, $7 * 1000, $8 * 1000 }' "$work/$name.csv"
  else
    local i t0 t1
    : > "$work/$name.times"
    for ((i = 0; i < runs; i++)); do
      t0=$(date +%s%N)
      "$@" > /dev/null 2>&1 || return 1
      t1=$(date +%s%N)
      echo $(((t1 - t0) / 1000)) >> "$work/$name.times"
    done
    awk '{ s += $1; if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 }
         END { printf "%.2f %.2f %.2f\n", s / NR / 1000, min / 1000, max / 1000 }' "$work/$name.times"
  fi
}

read -r e_mean e_min e_max < <(time_cmd edeploy "$RUNS" "$BIN" detect)

# The python side, or the reason it cannot run.
py_why=""
if [ ! -x "$VENV/bin/hardware-detect" ]; then
  if ! python3 -m venv "$VENV" > "$work/venv.log" 2>&1; then
    py_why="cannot create $VENV (python3 -m venv failed)"
  elif ! echo '*' > "$VENV/.gitignore"; then
    py_why="cannot write into $VENV"
  elif ! "$VENV/bin/pip" install -q "hardware==$HARDWARE_VERSION" > "$work/pip.log" 2>&1; then
    py_why="pip install hardware==$HARDWARE_VERSION failed: $(tail -n 1 "$work/pip.log")"
  fi
fi
if [ -z "$py_why" ]; then
  if [ "$(id -u)" != 0 ]; then
    py_why="hardware-detect needs root"
  elif ! command -v lshw > /dev/null; then
    py_why="lshw is not installed (apt-get install lshw): hardware-detect reads system, memory and NICs from it"
  elif ! "$VENV/bin/hardware-detect" > "$work/python.out" 2> "$work/python.err"; then
    py_why="hardware-detect failed: $(tail -n 1 "$work/python.err")"
  fi
fi
if [ -z "$py_why" ]; then
  py_lines=$("$VENV/bin/python" -c 'import ast, sys; print(len(ast.literal_eval(sys.stdin.read())))' \
    < "$work/python.out" 2> /dev/null || echo "?")
  if ! read -r p_mean p_min p_max < <(time_cmd python "$RUNS_PY" "$VENV/bin/hardware-detect"); then
    py_why="hardware-detect failed while timing"
  fi
fi

echo "hardware detection on $(uname -n) ($(nproc) cores, kernel $(uname -r))"
echo "timer: $(have_hyperfine && echo hyperfine || echo 'shell loop (includes fork/exec of date)')"
echo
printf '%-34s %6s %10s %10s %10s %7s\n' tool runs "mean ms" "min ms" "max ms" lines
printf '%-34s %6s %10s %10s %10s %7s\n' "edeploy detect" "$RUNS" "$e_mean" "$e_min" "$e_max" "$edeploy_lines"
if [ -z "$py_why" ]; then
  printf '%-34s %6s %10s %10s %10s %7s\n' "hardware-detect (hardware $HARDWARE_VERSION)" \
    "$RUNS_PY" "$p_mean" "$p_min" "$p_max" "$py_lines"
  awk -v e="$e_mean" -v p="$p_mean" 'BEGIN { if (e > 0) printf "\nedeploy detect is %.0fx faster\n", p / e }'
else
  printf '%-34s %s\n' "hardware-detect (hardware $HARDWARE_VERSION)" "not run: $py_why"
fi

if awk -v e="$e_mean" -v b="$BUDGET_MS" 'BEGIN { exit !(e >= b) }'; then
  echo "FAIL: edeploy detect mean ${e_mean} ms is over the ${BUDGET_MS} ms budget" >&2
  exit 1
fi
echo "ok: edeploy detect mean ${e_mean} ms < ${BUDGET_MS} ms"
