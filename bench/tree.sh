#!/usr/bin/env bash
# Trees over the network, side by side with what eDeploy used: the real `edeploy-server` on
# loopback vs an rsync daemon on loopback vs `cp -a`, on two real Debian role trees
# (roles/debian/build: bookworm minbase + kernel + grub as 1.0, plus less/vim-tiny/curl as 1.1).
#
#   fresh install   edeploy install 1.0   | rsync -aHAX rsync://…/1.0/ | cp -a      (+ sync each)
#   upgrade 1.0→1.1 edeploy upgrade 1.1   | rsync -aHAX --delete rsync://…/1.1/     time + bytes
#   full verify     edeploy verify --full | rsync -n -c -aHAX rsync://…/1.0/ (checksum dry run)
#   fast verify     edeploy verify (metadata only)
#
# Usage: bench/tree.sh — runnable alone, and from bench/run.sh (`make bench`).
# Environment:
#   EDEPLOY_BENCH_TREES  directory holding install/1.0/debian and install/1.1/debian; default
#                        ${EDEPLOY_CACHE:-~/.cache/edeploy}/bench-trees, built there with
#                        roles/debian/build (root + network, once) when missing
#   EDEPLOY_BENCH_RUNS   measured runs per figure (median reported), default 3
#   EDEPLOY_BENCH_WORK   keep the work dir (store, installs) there instead of a temp dir: a
#                        second run reuses the indexed store
# Every copy lands on a freshly made ext4 (mkfs.ext4 before each run, as the initrd does before
# it installs), on a loop device with direct I/O over a fully written image file, so data reaches
# the disk and no run inherits the previous run's deleted blocks: on this VM's ext4 (mounted with
# `discard`), the first copy after an `rm -rf` of the previous 637 MB tree takes 8-10 s for every
# tool, whatever it does, and hid their differences. Needs root (losetup, mount).
# Every figure is with a warm page cache on the source side for every tool (one unmeasured
# warm-up run each, source tree and store both cached). Each copy is followed by `sync` inside
# the timing. Bytes on the wire: rsync's
# `--stats` "Total bytes received"; edeploy's from a counting TCP proxy in front of the server
# (a separate, untimed run: bytes do not depend on timing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
if [ "$(id -u)" != 0 ]; then
  echo "bench/tree.sh: needs root (a fresh ext4 per run on a loop device; rsync -aHAX keeps owners)" >&2
  exit 1
fi
RUNS=${EDEPLOY_BENCH_RUNS:-3}
CACHE=${EDEPLOY_CACHE:-$HOME/.cache/edeploy}
TREES=${EDEPLOY_BENCH_TREES:-$CACHE/bench-trees}
ROLE=debian

if [ ! -d "$TREES/install/1.0/$ROLE" ] || [ ! -d "$TREES/install/1.1/$ROLE" ]; then
  if [ -n "${EDEPLOY_BENCH_TREES:-}" ]; then
    echo "bench/tree.sh: $TREES has no install/1.0/$ROLE and install/1.1/$ROLE" >&2
    exit 1
  fi
  echo "bench/tree.sh: building the benchmark trees into $TREES (once)"
  [ -d "$TREES/install/1.0/$ROLE" ] || roles/debian/build "$TREES" 1.0
  [ -d "$TREES/install/1.1/$ROLE" ] || roles/debian/build --plus "$TREES" 1.1
fi
TREES=$(cd "$TREES" && pwd)

cargo build --release -q -p edeploy-server -p edeploy-host
SERVER=$REPO/target/release/edeploy-server
EDEPLOY=$REPO/target/release/edeploy

if [ -n "${EDEPLOY_BENCH_WORK:-}" ]; then
  W=$EDEPLOY_BENCH_WORK
  mkdir -p "$W"
else
  W=$(mktemp -d /tmp/edeploy-bench-tree.XXXXXX)
fi
W=$(cd "$W" && pwd)
PIDS=()
LOOP=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if mountpoint -q "$W/mnt" 2>/dev/null; then umount "$W/mnt" || true; fi
  [ -z "$LOOP" ] || losetup -d "$LOOP" || true
  rm -f "$W/disk.img"
  [ -n "${EDEPLOY_BENCH_WORK:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# fresh DIR: DIR is an empty directory at the top of a new ext4 mounted on $MNT (outside the
# timing).
fresh() {
  if mountpoint -q "$MNT"; then umount "$MNT"; fi
  mkfs.ext4 -q -F -E nodiscard "$LOOP"
  mount "$LOOP" "$MNT"
  mkdir "$1"
}

# --- server side: config, store, edeploy-server, rsync daemon --------------------------------
mkdir -p "$W/conf" "$W/hw" "$W/logs" "$W/health" "$W/store" "$W/metadata/1.0/$ROLE/1.1"
cat >"$W/conf/edeploy.conf" <<EOF
[SERVER]
CONFIGDIR=$W/conf
HWDIR=$W/hw
LOGDIR=$W/logs
HEALTHDIR=$W/health
LOCKFILE=$W/edeploy.lock
USEPXEMNGR=False
INSTALLDIR=$TREES/install
METADATADIR=$W/metadata
STOREDIR=$W/store
EOF
entries=$(find "$TREES/install/1.0/$ROLE" | wc -l)
size=$(du -sh "$TREES/install/1.0/$ROLE" | cut -f1)
echo "trees: $TREES/install/{1.0,1.1}/$ROLE  (1.0: $entries entries, $size)"
echo "load before: $(uptime | sed 's/.*load/load/')   runs per figure: $RUNS (median)"

if [ ! -f "$W/store/manifests/1.1/$ROLE.manifest" ]; then
  s=$(now)
  "$SERVER" index --config "$W/conf/edeploy.conf" >/dev/null
  echo "index (both trees, once, server side): $(awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s"
fi

"$SERVER" serve --config "$W/conf/edeploy.conf" --listen 127.0.0.1:0 >"$W/server.out" 2>"$W/server.err" &
PIDS+=($!)
URL=
for _ in $(seq 100); do
  URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$W/server.out" "$W/server.err" 2>/dev/null | head -1 | sed 's/^[^:]*:http/http/') || true
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "edeploy-server did not start" >&2; cat "$W/server.err" >&2; exit 1; }

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$W/rsyncd.conf" <<EOF
pid file = $W/rsyncd.pid
use chroot = no
[install]
path = $TREES/install
read only = yes
uid = 0
gid = 0
numeric ids = yes
EOF
rsync --daemon --no-detach --config="$W/rsyncd.conf" --port="$RPORT" --address=127.0.0.1 &
PIDS+=($!)
RSYNC=rsync://127.0.0.1:$RPORT/install
for _ in $(seq 100); do rsync "$RSYNC/" >/dev/null 2>&1 && break; sleep 0.1; done

# A counting TCP proxy in front of the edeploy server: prints the bytes server→client when
# told to (SIGUSR1 → file), so the bench reads bytes on the wire without touching the server.
cat >"$W/proxy.py" <<'EOF'
import socket, sys, threading
up = (sys.argv[1], int(sys.argv[2])); out = sys.argv[3]
total = [0]; lock = threading.Lock()
def pump(a, b, count):
    try:
        while True:
            d = a.recv(1 << 20)
            if not d: break
            b.sendall(d)
            if count:
                with lock: total[0] += len(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
def serve(c):
    s = socket.create_connection(up)
    threading.Thread(target=pump, args=(c, s, False), daemon=True).start()
    pump(s, c, True)
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(64)
print(l.getsockname()[1], flush=True)
import signal
def dump(*_):
    with lock, open(out, "w") as f: f.write(str(total[0]))
signal.signal(signal.SIGUSR1, dump)
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
hp=${URL#http://}
python3 -u "$W/proxy.py" "${hp%:*}" "${hp##*:}" "$W/proxy.bytes" >"$W/proxy.port" &
PIDS+=($!)
PROXY_PID=$!
for _ in $(seq 50); do [ -s "$W/proxy.port" ] && break; sleep 0.1; done
PROXY=http://127.0.0.1:$(cat "$W/proxy.port")
proxy_bytes() { rm -f "$W/proxy.bytes"; kill -USR1 "$PROXY_PID"; for _ in $(seq 50); do [ -s "$W/proxy.bytes" ] && break; sleep 0.1; done; cat "$W/proxy.bytes"; }

# timed CMD...: seconds for CMD followed by sync.
timed() { local s; s=$(now); "$@" >/dev/null; sync; awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
MNT=$W/mnt
D=$MNT/root
mkdir -p "$MNT"
# The target disk: 2 GiB written once (so later writes land on allocated blocks), direct I/O.
dd if=/dev/zero of="$W/disk.img" bs=16M count=128 status=none
sync
LOOP=$(losetup --find --show --direct-io=on "$W/disk.img")

# --- fresh install ---------------------------------------------------------------------------
ed_install() { "$EDEPLOY" install 1.0 $ROLE --root "$1" --server "${2:-$URL}"; }
rs_install() { rsync -aHAX "$RSYNC/1.0/$ROLE/" "$1/"; }
cp_install() { cp -a "$TREES/install/1.0/$ROLE/." "$1/"; }
declare -A T
for tool in ed rs cp; do
  fresh "$D"; "${tool}_install" "$D" >/dev/null # warm-up (page cache), not measured
  for _ in $(seq "$RUNS"); do
    fresh "$D"
    timed "${tool}_install" "$D"
  done >"$W/t.$tool.fresh"
  T[$tool.fresh]=$(median <"$W/t.$tool.fresh")
done

# --- verify (on the rsync copy of 1.0 for rsync, the edeploy install of 1.0 for edeploy) -----
fresh "$D"; ed_install "$D" >/dev/null; sync
for _ in $(seq "$RUNS"); do timed "$EDEPLOY" verify --full --root "$D"; done >"$W/t.ed.vfull"
for _ in $(seq "$RUNS"); do timed "$EDEPLOY" verify --root "$D"; done >"$W/t.ed.vfast"
"$EDEPLOY" verify --full --root "$D" >/dev/null || { echo "edeploy verify --full reports drift" >&2; exit 1; }
for _ in $(seq "$RUNS"); do timed rsync -n -c -aHAX "$RSYNC/1.0/$ROLE/" "$D/"; done >"$W/t.rs.vfull"
T[ed.vfull]=$(median <"$W/t.ed.vfull")
T[ed.vfast]=$(median <"$W/t.ed.vfast")
T[rs.vfull]=$(median <"$W/t.rs.vfull")

# --- upgrade 1.0 → 1.1 -----------------------------------------------------------------------
for i in $(seq "$RUNS"); do
  fresh "$D"; ed_install "$D" >/dev/null; sync
  timed "$EDEPLOY" upgrade 1.1 --root "$D" --server "$URL"
done >"$W/t.ed.up"
"$EDEPLOY" verify --full --root "$D" >/dev/null || { echo "edeploy verify --full after upgrade reports drift" >&2; exit 1; }
# Bytes: once more through the counting proxy (fresh 1.0 install straight from the server).
fresh "$D"; ed_install "$D" >/dev/null; sync
before=$(proxy_bytes)
"$EDEPLOY" upgrade 1.1 --root "$D" --server "$PROXY" >/dev/null
ed_bytes=$(($(proxy_bytes) - before))
for i in $(seq "$RUNS"); do
  fresh "$D"; rs_install "$D"; sync
  s=$(now)
  rsync -aHAX --delete --stats "$RSYNC/1.1/$ROLE/" "$D/" >"$W/rsync.stats"
  sync
  awk -v a="$s" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
done >"$W/t.rs.up"
rs_bytes=$(awk -F: '/Total bytes received/ { gsub(/[ ,]/, "", $2); print $2 }' "$W/rsync.stats")
T[ed.up]=$(median <"$W/t.ed.up")
T[rs.up]=$(median <"$W/t.rs.up")
umount "$MNT"

# --- table -----------------------------------------------------------------------------------
echo "load after: $(uptime | sed 's/.*load/load/')"
row() { # label edeploy other other-name goal-ratio unit
  awk -v l="$1" -v e="$2" -v o="$3" -v n="$4" -v g="$5" -v u="$6" 'BEGIN {
    r = o > 0 ? e / o : 0
    printf "%-26s %10.3f %-2s %10.3f %-2s %-10s %6.2fx  goal <= %.2fx  %s\n", l, e, u, o, u, n, r, g, (r <= g ? "ok" : "MISSED") }'
}
echo
printf "%-26s %13s %13s %-10s %7s\n" "" "edeploy" "other" "(other)" "ratio"
row "fresh install vs rsync" "${T[ed.fresh]}" "${T[rs.fresh]}" "rsync" 0.7 s
row "fresh install vs cp -a" "${T[ed.fresh]}" "${T[cp.fresh]}" "cp -a" 1.0 s
row "upgrade 1.0->1.1 time" "${T[ed.up]}" "${T[rs.up]}" "rsync" 0.5 s
row "upgrade 1.0->1.1 bytes" "$(awk -v b="$ed_bytes" 'BEGIN { print b / 1e6 }')" "$(awk -v b="$rs_bytes" 'BEGIN { print b / 1e6 }')" "rsync" 1.0 MB
row "verify --full" "${T[ed.vfull]}" "${T[rs.vfull]}" "rsync -n -c" 0.5 s
awk -v e="${T[ed.vfast]}" 'BEGIN { printf "%-26s %10.3f s  %35s goal <= 0.10 s  %s\n", "verify (metadata only)", e, "", (e <= 0.1 ? "ok" : "MISSED") }'
echo
echo "runs (s): edeploy fresh $(paste -sd' ' "$W/t.ed.fresh") | rsync $(paste -sd' ' "$W/t.rs.fresh") | cp -a $(paste -sd' ' "$W/t.cp.fresh")"
echo "          edeploy upgrade $(paste -sd' ' "$W/t.ed.up") | rsync $(paste -sd' ' "$W/t.rs.up")"
echo "          verify --full $(paste -sd' ' "$W/t.ed.vfull") | rsync -n -c $(paste -sd' ' "$W/t.rs.vfull") | verify $(paste -sd' ' "$W/t.ed.vfast")"
