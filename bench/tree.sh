#!/bin/sh
# Rough tree benchmark until the HTTP path exists: index TREE into a local store, then time a
# fresh install (pack stream, verify, one syncfs) against `cp -a` + sync, and `verify --full`.
# Usage: bench/tree.sh [TREE] (default /usr/share). Local disk, warm cache: not the network case.
set -eu
TREE=${1:-/usr/share}
cd "$(dirname "$0")/.."
cargo build --release -q -p edeploy-tree --example tree_tool
T=$PWD/target/release/examples/tree_tool
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
now() { date +%s.%N; }
el() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
s=$(now); $T index "$W/store" "$TREE" 1 bench 2>/dev/null; e=$(now)
echo "index:        $(el "$s" "$e") s  ($(find "$TREE" | wc -l) entries, $(du -sh "$TREE" | cut -f1))"
for i in 1 2 3; do
  rm -rf "$W/root"; sync
  s=$(now); $T install "$W/store" 1 bench "$W/root" 2>/dev/null; e=$(now)
  echo "install #$i:   $(el "$s" "$e") s"
done
for i in 1 2 3; do
  rm -rf "$W/cp"; sync
  s=$(now); cp -a "$TREE" "$W/cp"; sync; e=$(now)
  echo "cp -a+sync #$i: $(el "$s" "$e") s"
done
s=$(now); $T verify "$W/root" "$W/store/manifests/1/bench.manifest" --full >/dev/null 2>&1; e=$(now)
echo "verify --full: $(el "$s" "$e") s"
s=$(now); $T verify "$W/root" "$W/store/manifests/1/bench.manifest" >/dev/null 2>&1; e=$(now)
echo "verify (fast): $(el "$s" "$e") s"
