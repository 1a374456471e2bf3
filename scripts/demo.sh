#!/usr/bin/env bash
# `make demo`: the main job on the embedded defaults, step by step with timings. Writes only under
# a temp dir (the server's data) and target/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
t0=$(date +%s%N)
step() { printf '\n== [%5d ms] %s\n' $(( ($(date +%s%N) - t0) / 1000000 )) "$*"; }

step "edeploy detect: this machine's hardware list (first lines)"
"$bin/edeploy" detect --format human | head -n 20
"$bin/edeploy" detect > target/demo-hw.json

step "edeploy-server match --config specs: which profile would this machine get, and why (dry run)"
"$bin/edeploy-server" match --config specs --hw target/demo-hw.json --explain || true

step "edeploy-server serve: start the provisioning server on the example specs/"
data=$(mktemp -d)
"$bin/edeploy-server" serve --listen 127.0.0.1:0 --data-dir "$data/edeploy" > "$data/serve.out" 2> "$data/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
url=""
for _ in $(seq 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$data/serve.out" | head -n 1 || true)
  [ -n "$url" ] && break
  sleep 0.05
done
[ -n "$url" ] || { cat "$data/serve.log"; echo "server did not start" >&2; exit 1; }
cat "$data/serve.out"

step "a QEMU guest uploads its hardware list (curl -F file=@hw.json $url/upload): the configure script"
curl -sS -F section=SERVER -F file=@server/tests/data/qemu-vm.json "$url/upload"

step "what the server recorded: state, the CMDB entry, the saved hardware file"
cat "$data/edeploy/state"
head -n 2 "$data/edeploy/vm.cmdb"
ls "$data/edeploy/hw"

step "the same machine again: a reinstall gets the same entry"
curl -sS -F file=@server/tests/data/qemu-vm.json "$url/upload" | grep -E "^(ip|hostname)="

step "a machine no profile takes: 404 and a script that fails loudly"
printf '[["system","product","vendor","Nobody"]]' > "$data/nobody.json"
curl -sS -o /dev/stdout -w 'HTTP %{http_code}\n' -F file=@"$data/nobody.json" "$url/upload"

step "done"
