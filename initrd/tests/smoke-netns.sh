#!/bin/sh
# End-to-end smoke test of /init without QEMU (root only): the static init runs as PID 1 of a
# new PID + mount namespace, chrooted into a tiny busybox root, inside a network namespace
# joined to the host by a veth pair. A container has neither DMI nor a physical NIC, so the
# server would refuse to name the machine: the configure script is rendered by the real
# edeploy-server beforehand for a fixture hardware list, and lighttpd (eDeploy's setup) answers
# the initrd with it from a CGI `upload.py` (recording each request) and serves the store
# statically under /trees/ (the tree routes are plain files by design).
# The configure script bind-mounts a directory on /chroot and uses a 2 MiB disk image with an
# msdos label as DISK, so every step runs for real except module loading (no module database).
#
#   sh initrd/tests/smoke-netns.sh [INIT] [EDEPLOY_SERVER]     (KEEP=1 keeps the work dir)
#
# Exit 0 when the console shows "edeploy-init: installed in" and the installed tree, grub.cfg,
# MBR and hand-off files are as expected.
set -eu
INIT=${1:-target/x86_64-unknown-linux-gnu/initrd/init}
SERVER=${2:-target/debug/edeploy-server}
INIT=$(readlink -f "$INIT")
SERVER=$(readlink -f "$SERVER")
W=$(mktemp -d /tmp/edeploy-smoke.XXXXXX)
NS=edeploy-smoke-$$
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    ip link del "v$$a" 2>/dev/null || true
}
trap cleanup EXIT

# --- server side: config, one role tree, index --------------------------------------------
S=$W/srv
mkdir -p "$S/conf" "$S/install/1.0/base/etc" "$S/install/1.0/base/boot" "$S/install/1.0/base/var/lib/edeploy"
cat > "$S/edeploy.conf" <<EOF
[SERVER]
CONFIGDIR=conf
HWDIR=hw
LOGDIR=logs
HEALTHDIR=health
LOCKFILE=edeploy.lock
INSTALLDIR=install
STOREDIR=store
METADATADIR=metadata
EOF
mkdir -p "$S/hw" "$S/logs" "$S/health" "$S/metadata"
echo "[('vm', '*')]" > "$S/conf/state"
echo "[('network', '\$eth', 'serial', '\$mac')]" > "$S/conf/vm.specs"
echo "[{'hostname': 'smoke1'}]" > "$S/conf/vm.cmdb"
cat > "$S/conf/vm.configure" <<'EOF'
echo "configuring $hostname on $eth ($mac)"
mkdir -p /target
run mount -o bind /target /chroot
set_role base 1.0 /disk.img
grub_options console=ttyS0
echo "welcome to $hostname" | config /etc/motd 644
EOF
echo "Role base" > "$S/install/1.0/base/etc/motd"
echo kernel > "$S/install/1.0/base/boot/vmlinuz-6.1.0-smoke"
echo initrd > "$S/install/1.0/base/boot/initrd.img-6.1.0-smoke"
printf 'VERS=1.0\nROLE=base\n' > "$S/install/1.0/base/var/lib/edeploy/conf"
"$SERVER" index --config "$S/edeploy.conf" >/dev/null

# --- the initrd root ------------------------------------------------------------------------
R=$W/root
mkdir -p "$R/bin" "$R/usr/share/edeploy" "$R/usr/lib/edeploy/grub/i386-pc"
cp "$INIT" "$R/init"
cp /usr/bin/busybox "$R/bin/busybox"
for a in $(busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
# Fake grub images: the MBR code and a 20-sector core.img (only their placement is checked).
head -c 512 /dev/zero | tr '\0' '\353' > "$R/usr/lib/edeploy/grub/i386-pc/boot.img"
head -c 10240 /dev/zero | tr '\0' '\300' > "$R/usr/lib/edeploy/grub/i386-pc/core.img"
truncate -s 2M "$R/disk.img"
echo 'start=2048, type=83' | sfdisk -q "$R/disk.img"

# --- network: veth pair, host side 10.9.$((($$ % 200) + 1)).1 --------------------------------
NET=10.9.$((($$ % 200) + 1))
ip netns add "$NS"
ip link add "v$$a" type veth peer name "v$$b"
ip link set "v$$b" netns "$NS"
ip addr add "$NET.1/24" dev "v$$a"
ip link set "v$$a" up
PORT=$((20000 + $$ % 20000))
"$SERVER" serve --config "$S/edeploy.conf" --listen "127.0.0.1:$PORT" > "$W/server.out" 2> "$W/server.err" &
SPID=$!
sleep 1
printf '[["system","product","name","smoke"],["network","eth0","serial","52:54:00:12:34:56"]]' > "$W/hw.json"
curl -sf -o "$W/configure.txt" -F section=SERVER -F file=@"$W/hw.json" "http://127.0.0.1:$PORT/cgi-bin/upload.py"
kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=

mkdir -p "$W/cgi" "$W/req" "$W/empty"
cat > "$W/cgi/upload.py" <<EOF
#!/bin/sh
cat > "$W/req/\$(date +%s%N)"
printf 'Content-Type: text/plain\r\n\r\n'
cat "$W/configure.txt"
EOF
chmod 755 "$W/cgi/upload.py"
cat > "$W/lighttpd.conf" <<EOF
server.document-root = "$W/empty"
server.bind = "$NET.1"
server.port = $PORT
server.modules = ("mod_alias", "mod_cgi")
alias.url = ("/cgi-bin/" => "$W/cgi/", "/trees/" => "$S/store/")
\$HTTP["url"] =~ "^/cgi-bin/" { cgi.assign = ("" => "") }
EOF
lighttpd -D -f "$W/lighttpd.conf" > "$W/lighttpd.out" 2>&1 &
SPID=$!
sleep 1

CMDLINE="console=ttyS0 SERV=$NET.1 HTTP_PORT=$PORT IP=v$$b:$NET.2/24 LINK_UP_TIMEOUT=5 ONSUCCESS=halt ONFAILURE=halt UPLOAD_LOG=1 | console=ttyS0,115200 |"
set +e
ip netns exec "$NS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin EDEPLOY_INIT_CMDLINE="$CMDLINE" \
    unshare --pid --fork --mount --propagation private chroot "$R" /init > "$W/console" 2>&1
set -e
cat "$W/console"
fail() { echo "SMOKE FAILED: $*" >&2; exit 1; }
grep -q '^edeploy-init: installed in [0-9]* ms$' "$W/console" || fail "no 'installed in' marker"
for s in boot modules detect network upload configure install finish; do
    grep -q "^edeploy-init: step $s ok (" "$W/console" || fail "step $s"
done
T=$R/target
[ "$(cat "$T/etc/motd")" = "welcome to smoke1" ] || fail "post_rsync motd"
grep -q '^HOSTNAME=smoke1$' "$T/var/lib/edeploy/conf" || fail "conf HOSTNAME"
grep -q '^PXEMAC=[0-9a-f:]*$' "$T/var/lib/edeploy/conf" || fail "conf PXEMAC"
[ "$(grep -c '^ROLE=' "$T/var/lib/edeploy/conf")" = 1 ] || fail "ROLE duplicated"
grep -q 'linux /boot/vmlinuz-6.1.0-smoke root=.* ro console=ttyS0,115200 console=ttyS0$' "$T/boot/grub/grub.cfg" || fail "grub.cfg"
[ "$(cat "$T/etc/hostname")" = smoke1 ] || fail "etc/hostname"
[ -s "$T/var/log/edeploy/install.log" ] || fail "install.log"
[ "$(od -An -tx1 -j510 -N2 "$R/disk.img" | tr -d ' ')" = 55aa ] || fail "MBR signature lost"
[ "$(od -An -tx1 -j512 -N1 "$R/disk.img" | tr -d ' ')" = c0 ] || fail "core.img not at LBA 1"
grep -lq 'filename="[^"]*[.]log[.]gz"' "$W/req/"* || fail "log not uploaded"
# --- failure path: the configure script fails -> marker, failure report, log, ONFAILURE ------
echo 'echo "disk on fire" >&2; exit 3' >> "$W/configure.txt"
rm -f "$W/req/"*
set +e
ip netns exec "$NS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin EDEPLOY_INIT_CMDLINE="$CMDLINE" \
    unshare --pid --fork --mount --propagation private chroot "$R" /init > "$W/console2" 2>&1
set -e
cat "$W/console2"
grep -q '^edeploy-init: step configure FAILED: configure script failed (exit status: 3)$' "$W/console2" || fail "configure FAILED marker"
grep -q '^disk on fire$' "$W/console2" || fail "script stderr not on the console"
grep -lq 'name="failure"' "$W/req/"* || fail "no failure report"
grep -lq 'filename="[^"]*[.]log[.]gz"' "$W/req/"* || fail "log not uploaded after the failure"
echo "SMOKE OK"
[ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
