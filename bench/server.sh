#!/usr/bin/env bash
# Upload server benchmarks (issue "Provisioning server: upload endpoint as embedded HTTP server and
# as CGI"): a 50-profile config, '*' quotas, machines spread over every profile (a machine of
# product prodN is tried against N+1 profiles), each upload durably saving its .hw file.
#  - embedded server (`edeploy-server serve`)                 (goal: at >= 2,000 req/s, p99 < 10 ms)
#    - closed loop, CONC keep-alive clients each sending as soon as its answer arrives: the
#      server's capacity; the mean latency is clients / throughput by construction;
#    - open loop, OPEN_RATE requests per second scheduled whatever the server does, latency from
#      the scheduled send time (a request queued behind a slow one counts its wait): the goal's
#      own question, "at 2,000 req/s, what p99".
#  - CGI under a real lighttpd (`cgi-bin/upload.py`)          (goal >= 300 req/s)
# The load generator is server/examples/loadgen.rs and shares the machine's cores with the server.
# Knobs: SECONDS_EACH, WARMUP_SECONDS (unmeasured load first, default 3), CONC (a list of client
# counts), OPEN_RATE (a list of offered rates),
# OPEN_CONNS, CGI_CONC, PROFILES, BENCH_DIR (the disk under test: the config and written files
# live in BENCH_DIR/bench-server, default target/bench-server).
# That directory is kept between runs, and each run takes up the machines the last one saved
# (re-installs: the server writes into the inodes of the files it replaces). Deleting the
# ~70,000 files of a run at its end made the next runs measure that deletion instead: on ext4
# without a journal (this project's VMs) every new inode skips the inodes freed in the last one
# to six minutes (docs/server.md). `rm -rf target/bench-server` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
SECONDS_EACH=${SECONDS_EACH:-5}
CONC=${CONC:-4 16 64}
OPEN_RATE=${OPEN_RATE:-2000}
OPEN_CONNS=${OPEN_CONNS:-64}
CGI_CONC=${CGI_CONC:-16}
PROFILES=${PROFILES:-50}

$CARGO build --quiet --release -p edeploy-server --bin edeploy-server --example loadgen
bin=$PWD/target/release/edeploy-server
loadgen=$PWD/target/release/examples/loadgen
work=${BENCH_DIR:-$PWD/target}/bench-server
mkdir -p "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}

# --- embedded
mkdir -p "$work/emb"
conf=$("$loadgen" config "$work/emb" "$PROFILES")
port=$(free_port)
EDEPLOY_LOG=warn "$bin" serve --config "$conf" --listen "127.0.0.1:$port" >/dev/null &
pids+=($!)
wait_port "$port"
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load/load/'); files in $work ($(find "$work/emb/hw" -name '*.hw' 2>/dev/null | wc -l) machines known)"
# Unmeasured warm-up: page cache, the server's caches, the fsync threads, the hw directory.
"$loadgen" run "127.0.0.1:$port" /upload 16 "${WARMUP_SECONDS:-3}" "$PROFILES" >/dev/null
for c in $CONC; do
  echo "embedded server, $PROFILES profiles, closed loop, $c clients, ${SECONDS_EACH}s:"
  echo "  $("$loadgen" run "127.0.0.1:$port" /upload "$c" "$SECONDS_EACH" "$PROFILES")"
done
for r in $OPEN_RATE; do
  echo "embedded server, $PROFILES profiles, open loop, $r req/s offered on $OPEN_CONNS connections, ${SECONDS_EACH}s:"
  echo "  $("$loadgen" open "127.0.0.1:$port" /upload "$r" "$SECONDS_EACH" "$PROFILES" "$OPEN_CONNS")"
done

# --- CGI under lighttpd
lighttpd=$(command -v lighttpd || echo /usr/sbin/lighttpd)
if [ ! -x "$lighttpd" ]; then
  echo "CGI bench: lighttpd missing (apt-get install lighttpd): skipped" >&2
  exit 0
fi
mkdir -p "$work/cgi/data" "$work/cgi/www" "$work/cgi/cgi-bin"
conf=$("$loadgen" config "$work/cgi/data" "$PROFILES")
cp "$bin" "$work/cgi/cgi-bin/upload.py"
port=$(free_port)
cat > "$work/cgi/lighttpd.conf" <<CONF
server.document-root = "$work/cgi/www"
server.bind = "127.0.0.1"
server.port = $port
server.errorlog = "$work/cgi/error.log"
server.max-keep-alive-requests = 100000
server.modules = ("mod_alias", "mod_setenv", "mod_cgi")
alias.url = ("/cgi-bin/" => "$work/cgi/cgi-bin/")
setenv.add-environment = ("EDEPLOY_CONF" => "$conf")
\$HTTP["url"] =~ "^/cgi-bin/" { cgi.assign = ("" => "") }
CONF
"$lighttpd" -D -f "$work/cgi/lighttpd.conf" &
pids+=($!)
wait_port "$port"
echo "CGI under lighttpd, $PROFILES profiles, $CGI_CONC clients, ${SECONDS_EACH}s:"
echo "  $("$loadgen" run "127.0.0.1:$port" /cgi-bin/upload.py "$CGI_CONC" "$SECONDS_EACH" "$PROFILES")"
