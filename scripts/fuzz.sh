#!/usr/bin/env bash
# Runs the cargo-fuzz targets, each for SECONDS (default 600), seeded from the example config dir.
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(literal matcher generate upload ranges)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus"
  case $t in
    literal|generate) cp specs/*.specs specs/*.cmdb specs/state "$corpus"/ 2>/dev/null || true ;;
    matcher)
      # First line: specs; rest: hardware list.
      for s in specs/*.specs; do
        { tr -d '\n' < "$s" | sed 's/#[^]]*\[/[/'; echo; cat server/tests/data/qemu-vm.json; } > "$corpus/$(basename "$s").seed"
      done ;;
    upload)
      # Content-Type line, newline, multipart body.
      for h in server/tests/data/qemu-vm.json server/tests/data/hp-dl360.hw; do
        printf 'multipart/form-data; boundary=B\n--B\r\nContent-Disposition: form-data; name="section"\r\n\r\nSERVER\r\n--B\r\nContent-Disposition: form-data; name="file"; filename="hw.json"\r\n\r\n%s\r\n--B--\r\n' \
          "$(cat "$h")" > "$corpus/$(basename "$h").seed"
      done ;;
    ranges)
      # First line: Range header|file length (also the multipart boundary); rest: a body.
      printf 'B|1000\n--B\r\nContent-Range: bytes 0-4/1000\r\n\r\nhello\r\n--B--\r\n' > "$corpus/multipart.seed"
      printf 'bytes=0-9,100-109,-5|1000\n' > "$corpus/header.seed" ;;
  esac
  echo "== fuzzing $t for ${secs}s"
  cargo fuzz run "$t" "$corpus" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len=4096 2>&1 | tail -n 15
done
