#!/usr/bin/env bash
# make vm-test: the .deb on a real systemd. Builds a root file system of VM_RELEASE (bookworm, the
# default, or trixie) with debootstrap (cached in /var/cache/edged-ci/vm-base-RELEASE), installs
# dist/edged_*_all.deb into a fresh copy with apt, boots it
# under qemu and checks from outside, over SSH and HTTP forwarded to the host's loopback:
# active after boot and answering; a snapshot written by the writer process inside the sandbox
# reads back byte for byte; SIGSTOP -> watchdog restart; SIGKILL -> restart; broken
# config -> fails visibly, no restart loop; reload works (and a broken reload fails visibly);
# stored events survive a reboot. With POWER_CUTS=N, then N power cuts: the VM is killed (not
# shut down) during a push burst, booted again, and every acknowledged record must be stored
# exactly once with a clean integrity_check (the disk with cache=none, so the guest's fsync
# reaches the host's disk). Last, the GPIO stage: a gpio-sim chip (the module built on the host
# by tests/vm/gpio-sim.sh for the guest's kernel) driven by edged's gpiod pin factory, the lock
# line sampled from outside (tests/vm/gpio-sample.py) across start, a grant, contact and
# exit-button edges, reload, stop and SIGKILL. GPIO_ONLY=1 skips the other checks (development).
#
# Needs root, debootstrap, qemu-system-x86_64, e2fsprogs, openssh-client, python3.
# STATUS: all checks pass here, on bookworm and trixie, the GPIO stage included; ~2.5 min for
# the first debootstrap and ~2 min for the first gpio-sim build (cached after), ~4 min a run
# plus 2-3 min for the GPIO stage
# under software emulation (details and the KVM note: docs/operations.md, "make vm-test").
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
VM=$REPO/build/vm
RELEASE=${VM_RELEASE:-bookworm}
POWER_CUTS=${POWER_CUTS:-0}
# The debootstrapped base is cached outside the checkout, beside the other test roots, so that
# a fresh clone on the same machine (CI) does not build it again.
CACHE=${EDGED_CI_CACHE:-/var/cache/edged-ci}
BASE=$CACHE/vm-base-$RELEASE
ROOT=$VM/root
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SSH_PORT=${SSH_PORT:-$(free_port)}
RECV_PORT=${RECV_PORT:-$(free_port)}
SERIAL=PS71HD01MC22C00014  # the terminal in the shipped /etc/edged/edged.toml
PACKAGES=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,openssh-server,\
python3,python3-starlette,python3-hypercorn,python3-gpiozero,sqlite-utils,python3-tenacity,\
python3-httpx,adduser,ca-certificates
started=$SECONDS

say() { printf '\n===== vm-test: %s (%d s)\n' "$*" $((SECONDS - started)); }
fail() { printf 'vm-test: FAIL: %s\n' "$*"; exit 1; }
ok() { printf '  ok   %s\n' "$*"; }

DEB=$(ls -t "$REPO"/dist/edged_*_all.deb 2>/dev/null | head -n 1 || true)
[ -n "$DEB" ] || fail "no dist/edged_*_all.deb: run make deb first"

# ----- 1. the root file system -------------------------------------------------------------------
if [ ! -e "$BASE/.complete" ]; then
    # The mirror apt on this host uses (only package registries are reachable).
    MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
        | awk '$2 == "bookworm" || $2 == "trixie" { print $1; exit }')
    MIRROR=${MIRROR:-http://deb.debian.org/debian/}
    say "debootstrap $RELEASE from $MIRROR"
    rm -rf "$BASE" && mkdir -p "$VM" "$(dirname "$BASE")"
    debootstrap --variant=minbase --include="$PACKAGES" "$RELEASE" "$BASE" "$MIRROR" \
        >"$VM/debootstrap.log" 2>&1 || { tail -n 30 "$VM/debootstrap.log"; fail debootstrap; }
    touch "$BASE/.complete"
fi

mkdir -p "$VM"
say "fresh root from the cached base, install $(basename "$DEB") with apt"
rm -rf "$ROOT" && cp -a "$BASE" "$ROOT"
cp "$DEB" "$ROOT/tmp/"
# python3-libgpiod (a Suggests of the package): the GPIO stage's pin factory.
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "/tmp/$(basename "$DEB")" python3-libgpiod >"$VM/install.log" 2>&1 || { tail -n 30 "$VM/install.log"; fail install; }
rm -f "$ROOT/tmp/$(basename "$DEB")"
echo edged-vm >"$ROOT/etc/hostname"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$ROOT/etc/fstab"
mkdir -p "$ROOT/etc/systemd/network" "$ROOT/root/.ssh" "$ROOT/etc/systemd/system/edged.service.d"
printf '[Match]\nName=en*\n[Network]\nDHCP=yes\n' >"$ROOT/etc/systemd/network/en.network"
ln -sf /lib/systemd/system/systemd-networkd.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# No GPIO hardware in the VM: gpiozero's mock pins.
printf '[Service]\nEnvironment=GPIOZERO_PIN_FACTORY=mock\n' \
    >"$ROOT/etc/systemd/system/edged.service.d/vm.conf"
rm -f "$VM/key" "$VM/key.pub"
ssh-keygen -q -t ed25519 -N '' -f "$VM/key"
install -m 0600 "$VM/key.pub" "$ROOT/root/.ssh/authorized_keys"
KERNEL=$(ls "$ROOT"/boot/vmlinuz-* | head -n 1)
# The GPIO stage's simulated chip: gpio-sim built for this kernel on the host (cached).
KVER=$(basename "$KERNEL" | sed 's/^vmlinuz-//')
"$REPO/tests/vm/gpio-sim.sh" "$BASE" "$CACHE/gpio-sim-$KVER.ko" || fail "building gpio-sim for $KVER"
install -m 0644 "$CACHE/gpio-sim-$KVER.ko" "$ROOT/root/gpio-sim-edged.ko"
install -m 0644 "$REPO/tests/vm/gpio-sample.py" "$ROOT/root/gpio-sample.py"
INITRD=$(ls "$ROOT"/boot/initrd.img-* | head -n 1)
cp "$KERNEL" "$VM/vmlinuz" && cp "$INITRD" "$VM/initrd.img"
rm -f "$VM/disk.img"
mkfs.ext4 -q -F -L root -d "$ROOT" "$VM/disk.img" 3G

# ----- 2. boot ------------------------------------------------------------------------------------
# Software emulation by default: this machine has a /dev/kvm whose KVM cannot run a guest
# (qemu aborts setting MSRs with -cpu max/host and hangs with qemu64). VM_ACCEL=kvm opts in.
ACCEL=${VM_ACCEL:-tcg}
CPU=max
if [ "$ACCEL" = kvm ]; then CPU=host; fi
say "boot $RELEASE under qemu ($ACCEL)"
boot() {
    rm -f "$VM/qemu.pid"
    # cache=none: the guest's writes and flushes go to the host's disk, bypassing the host's page
    # cache, as on a real card (what a power cut tests). panic=5: under software emulation the
    # guest kernel panics now and then early in its boot (seen once in some 60 boots, in the
    # timer interrupt before the root file system is mounted); it then boots again by itself.
    qemu-system-x86_64 -machine q35 -accel "$ACCEL" -cpu "$CPU" -smp 2 -m 1024 \
        -kernel "$VM/vmlinuz" -initrd "$VM/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 net.ifnames=1 panic=5" \
        -drive "file=$VM/disk.img,format=raw,if=virtio,cache=none" \
        -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22,hostfwd=tcp:127.0.0.1:$RECV_PORT-:8090" \
        -display none -serial "file:$VM/console.log" -pidfile "$VM/qemu.pid" -daemonize
}
rm -f "$VM/console.log"
boot
cleanup() {
    if [ -e "$VM/qemu.pid" ]; then kill "$(cat "$VM/qemu.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT

vm() {
    ssh -q -i "$VM/key" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=5 -o BatchMode=yes root@127.0.0.1 "$@"
}
wait_ssh() {
    local deadline=$((SECONDS + ${1:-600}))
    until vm true 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { tail -n 40 "$VM/console.log"; fail "no SSH"; }
        sleep 3
    done
    if grep -q "Kernel panic" "$VM/console.log" 2>/dev/null; then
        echo "  (the guest kernel panicked while booting and booted again: $(grep -c 'Kernel panic - not syncing' "$VM/console.log") so far)"
    fi
}
# Wait until edged is active with a main PID other than $1 (or any, when $1 is empty).
wait_active() {
    local old=${1:-} deadline=$((SECONDS + ${2:-120})) pid
    while :; do
        pid=$(vm systemctl show -p MainPID --value edged 2>/dev/null || echo 0)
        if [ "$(vm systemctl is-active edged 2>/dev/null || true)" = active ] \
            && [ "$pid" != 0 ] && [ "$pid" != "$old" ]; then
            echo "$pid"
            return 0
        fi
        [ $SECONDS -lt $deadline ] || { vm journalctl -u edged --no-pager | tail -n 30 >&2; return 1; }
        sleep 2
    done
}
post() {  # post PATH JSON -> response body (via the forwarded receiver port)
    python3 - "$RECV_PORT" "$1" "$2" <<'PY'
import sys, urllib.request
port, path, body = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body.encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=20) as r:
    print(r.status, r.read().decode())
PY
}
push() { post /eventRcv "{\"type\":0,\"data\":{\"deviceSN\":\"$SERIAL\",\"uuid\":\"$1\",\"recognitionType\":1,\"timestamp\":$(date +%s),\"pass\":true}}"; }
auth() { post /auth "{\"deviceSN\":\"$SERIAL\",\"recognizeStatus\":4,\"timestamp\":$(date +%s),\"user\":{\"user_id\":\"$1\",\"name\":\"x\"}}"; }
stored() { vm edged events --json --limit 1000000 | grep -c "\"uuid\": \"$1\"" || true; }

wait_ssh 900
say "booted; SSH up"

# ----- 3. checks ----------------------------------------------------------------------------------
# GPIO_ONLY=1 (a development shortcut) skips to the GPIO stage.
if [ "${GPIO_ONLY:-0}" = 0 ]; then
PID=$(wait_active "" 180) || fail "edged not active after boot"
ok "active after boot (pid $PID): $(vm systemctl show -p StatusText --value edged)"
push vm-1 | grep -q '^200 ' || fail "push not acknowledged"
[ "$(stored vm-1)" = 1 ] || fail "push not stored"
ok "answers a push from outside and stores it"
auth nobody | grep -q '"pass":false' || fail "remote auth"
ok "answers remote auth (unknown person: pass false)"

say "snapshots: decoded and written by the writer process inside the unit's sandbox"
JPEG=$(mktemp)
python3 -c 'import sys; sys.stdout.buffer.write(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 200 + b"\xff\xd9")' >"$JPEG"
IMG=$(base64 -w0 "$JPEG")
post /eventRcv "{\"type\":0,\"data\":{\"deviceSN\":\"$SERIAL\",\"uuid\":\"vm-img\",\"recognitionType\":1,\"timestamp\":$(date +%s),\"pass\":true,\"rgb_image\":\"$IMG\"}}" \
    | grep -q '^200 ' || fail "push with a snapshot not acknowledged"
EVENT=$(vm edged events --json | python3 -c 'import json, sys; print([json.loads(l)["id"] for l in sys.stdin if "vm-img" in l][0])') \
    || fail "the push with a snapshot is not among the stored events"
for _ in 1 2 3 4 5; do
    vm "edged snapshot $EVENT -o /root/snapshot.jpg" >/dev/null 2>&1 && break
    sleep 1
done
[ "$(vm sha256sum /root/snapshot.jpg | cut -d' ' -f1)" = "$(sha256sum "$JPEG" | cut -d' ' -f1)" ] \
    || fail "the snapshot read back differs from the one pushed"
# the guest has no procps: field 19 of /proc/PID/stat is the nice value
NICE=$(vm 'for p in /proc/[0-9]*; do grep -qa "snapwrite[r]\.py" "$p/cmdline" 2>/dev/null && cut -d" " -f19 "$p/stat"; done; true' | head -n 1)
[ "$NICE" = 19 ] || fail "snapshot writer process not running at nice 19 (got '$NICE')"
rm -f "$JPEG"
ok "a pushed snapshot reads back byte for byte (event $EVENT); the writer process runs at nice 19"

say "SIGSTOP: the watchdog must restart edged"
vm kill -STOP "$PID"
NEW=$(wait_active "$PID" 120) || fail "not restarted after SIGSTOP"
vm journalctl -u edged --no-pager | grep -q "Watchdog timeout" || fail "no watchdog timeout logged"
ok "watchdog timeout, restarted (pid $PID -> $NEW)"
PID=$NEW

say "SIGKILL: must be restarted"
vm kill -KILL "$PID"
NEW=$(wait_active "$PID" 60) || fail "not restarted after SIGKILL"
ok "restarted (pid $PID -> $NEW), NRestarts=$(vm systemctl show -p NRestarts --value edged)"
PID=$NEW

say "reload"
vm "cp /etc/edged/edged.toml /root/edged.toml.good && sed -i 's/^unknown_person = .*/unknown_person = \"Who are you\"/' /etc/edged/edged.toml"
vm systemctl reload edged || fail "systemctl reload failed"
sleep 2
auth nobody | grep -q '"customtips":"Who are you"' || fail "reload did not apply the new tip"
[ "$(vm systemctl show -p MainPID --value edged)" = "$PID" ] || fail "reload restarted the daemon"
ok "systemctl reload: new tip served, same pid"
vm "echo 'bogus = 1' >> /etc/edged/edged.toml"
if vm systemctl reload edged 2>/dev/null; then fail "reload of a broken file succeeded"; fi
auth nobody | grep -q '"customtips":"Who are you"' || fail "daemon lost its config"
ok "broken file: systemctl reload fails visibly, daemon keeps serving"

say "broken config on restart: fails visibly, no restart loop"
if vm systemctl restart edged 2>/dev/null; then fail "restart with a broken config succeeded"; fi
sleep 15
[ "$(vm systemctl is-active edged || true)" = failed ] || fail "unit not failed"
STATUS=$(vm systemctl show -p ExecMainStatus --value edged)
R1=$(vm systemctl show -p NRestarts --value edged)
sleep 10
R2=$(vm systemctl show -p NRestarts --value edged)
[ "$STATUS" = 78 ] || fail "main status $STATUS, not 78"
[ "$R1" = "$R2" ] && [ "$(vm systemctl is-active edged || true)" = failed ] || fail "restart loop"
vm journalctl -u edged --no-pager | grep -q "unknown key" || fail "problem not in the journal"
ok "failed with status 78, NRestarts steady at $R2, problem in the journal"
vm "cp /root/edged.toml.good /etc/edged/edged.toml && systemctl start edged"
PID=$(wait_active "" 60) || fail "not back after fixing the config"
ok "fixed config: active again"

say "reboot: stored events survive"
push vm-2 | grep -q '^200 ' || fail "push before reboot"
vm systemctl reboot || true
sleep 10
wait_ssh 900
PID=$(wait_active "" 180) || fail "edged not active after reboot"
[ "$(stored vm-1)" = 1 ] && [ "$(stored vm-2)" = 1 ] || fail "events lost over the reboot"
ok "active again after reboot, events vm-1 and vm-2 still stored"

say "the unit as the booted systemd sees it"
# --man=no: the minimal guest has no man-db (CI checks the man pages on the host).
vm systemd-analyze verify --man=no edged.service || fail "systemd-analyze verify"
ok "systemd-analyze verify edged.service: clean"
vm systemd-analyze security edged.service | tail -n 1
echo "  warnings of this boot (journalctl -b -p warning):"
vm journalctl -b -p warning --no-pager -o cat | sed 's/^/    /' | tail -n 20

if [ "$POWER_CUTS" -gt 0 ]; then
    say "power cuts: $POWER_CUTS times the VM is killed during a push burst"
    LEDGER=$VM/ledger
    : >"$LEDGER"
    for cut in $(seq 1 "$POWER_CUTS"); do
        # Two connections push unique records as fast as edged acknowledges them; every
        # acknowledged uuid goes to the ledger before the next push. Bounded: 60 s, 20,000 records.
        python3 - "$RECV_PORT" "$SERIAL" "cut$cut" "$LEDGER" <<'PY' &
import http.client, json, sys, threading, time
port, serial, tag, ledger = sys.argv[1:]
out = open(ledger, "a", buffering=1)
lock = threading.Lock()
def pusher(lane):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)
    end = time.monotonic() + 60
    for n in range(10000):
        if time.monotonic() > end:
            return
        uuid = f"{tag}-{lane}-{n}"
        body = {"type": 0, "data": {"deviceSN": serial, "uuid": uuid, "recognitionType": 1,
                                    "timestamp": int(time.time()), "pass": True}}
        try:
            conn.request("POST", "/eventRcv", json.dumps(body), {"Content-Type": "application/json"})
            answer = conn.getresponse()
            data = answer.read()
        except OSError:
            return
        if answer.status == 200 and json.loads(data).get("code") == 200:
            with lock:
                out.write(uuid + "\n")
threads = [threading.Thread(target=pusher, args=(lane,)) for lane in (0, 1)]
for t in threads: t.start()
for t in threads: t.join()
PY
        PUSHER=$!
        sleep "$(python3 -c 'import random; print(round(random.uniform(1.0, 4.0), 2))')"
        kill -KILL "$(cat "$VM/qemu.pid")"
        wait "$PUSHER" || true
        boot
        wait_ssh 900
        PID=$(wait_active "" 180) || fail "edged not active after power cut $cut"
        vm 'cat >/root/ledger' <"$LEDGER"
        RESULT=$(vm python3 - <<'PY'
import sqlite3
acked = open("/root/ledger").read().split()
conn = sqlite3.connect("file:/var/lib/edged/edged.db?mode=ro", uri=True)
counts = dict(conn.execute("SELECT uuid, count(*) FROM events WHERE uuid LIKE 'cut%' GROUP BY uuid"))
lost = [u for u in acked if u not in counts]
doubled = [u for u, c in counts.items() if c > 1]
check = conn.execute("PRAGMA integrity_check").fetchone()[0]
print(f"acknowledged={len(acked)} lost={len(lost)} doubled={len(doubled)} integrity={check}")
PY
)
        echo "  cut $cut: $RESULT"
        case "$RESULT" in
            *" lost=0 doubled=0 integrity=ok") ;;
            *) fail "power cut $cut: $RESULT" ;;
        esac
    done
    ok "$POWER_CUTS power cuts during push bursts: $(wc -l <"$LEDGER") acknowledged records, 0 lost, 0 doubled, integrity ok"
fi

fi  # GPIO_ONLY

# ----- 4. the kernel's GPIO path --------------------------------------------------------------
# A simulated chip (gpio-sim) and edged driving it with its gpiod pin factory over the GPIO
# character device; every level is read from outside the daemon, in gpio-sim's sysfs files.
say "GPIO: a gpio-sim chip, edged's gpiod pin factory on /dev/gpiochip*"
GPIO_STARTED=$SECONDS
SIM=$(vm sh -s <<'SH'
set -e
modprobe configfs 2>/dev/null || true
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
insmod /root/gpio-sim-edged.ko
G=/sys/kernel/config/gpio-sim/edged
mkdir $G $G/bank0
echo 8 >$G/bank0/num_lines
for line in 0:lock 1:contact 2:rex; do
    mkdir $G/bank0/line${line%%:*}
    echo ${line#*:} >$G/bank0/line${line%%:*}/name
done
echo 1 >$G/live
CHIP=$(cat $G/bank0/chip_name)
# What Raspberry Pi OS's udev rules do for its own chips: the group gpio may use the device.
chgrp gpio /dev/$CHIP && chmod 0660 /dev/$CHIP
echo "$CHIP /sys/devices/platform/$(cat $G/dev_name)/$CHIP"
SH
) || fail "gpio-sim: no simulated chip"
CHIP=${SIM%% *}
SYSFS=${SIM#* }
ok "gpio-sim loaded: /dev/$CHIP, 8 lines (0 lock, 1 contact, 2 exit button)"
UNLOCK=4
vm sh -s <<SH || fail "configuring the door on /dev/$CHIP"
set -e
systemctl stop edged
rm -f /etc/systemd/system/edged.service.d/vm.conf  # no mock pins from here on
systemctl daemon-reload
sed -i 's|^pin_factory = .*|pin_factory = "gpiod"\nchip = "/dev/$CHIP"|' /etc/edged/edged.toml
cat >>/etc/edged/edged.toml <<'TOML'

[[doors]]
name = "lobby"
unlock_time = $UNLOCK.0
lock.pin = 0
contact.pin = 1
rex.pin = 2
TOML
cat >/tmp/people.json <<'JSON'
{"people": [{"id": "gp-1", "name": "Gate Person", "groups": "staff"}],
 "permissions": [{"group": "staff", "door": "lobby"}]}
JSON
runuser -u edged -- edged people import /tmp/people.json >/dev/null
SH
# sample PHASE: start the outside sampler of the lock line; sampled PHASE: stop it, its summary.
sample() {
    # SCHED_FIFO: the sampler keeps its pace while edged and the checks load the guest's CPUs.
    vm "rm -f /root/s-$1; nohup chrt -f 10 python3 /root/gpio-sample.py $SYSFS/sim_gpio0/value \
        /root/s-$1 >/dev/null 2>&1 </dev/null & echo \$! >/root/sampler.pid
        for i in \$(seq 1 100); do grep -q ready /root/s-$1 2>/dev/null && exit 0; sleep 0.1; done
        exit 1" || fail "the sampler did not start"
}
sampled() {
    vm "kill \$(cat /root/sampler.pid); for i in \$(seq 1 50); do [ \$(wc -l </root/s-$1) -ge 2 ] \
        && break; sleep 0.1; done; tail -n 1 /root/s-$1"
}
# locked_throughout SUMMARY WHAT: the line never left the locked (low) level.
locked_throughout() {
    case "$1" in
        *" highs=0 "*" first=0 last=0") ok "$2, lock line sampled from outside: never high ($1)" ;;
        *) fail "$2: the lock line left its locked level: $1" ;;
    esac
}
# one_unlock SUMMARY WHAT: exactly one high period, about unlock_time long, low at the end.
one_unlock() {
    python3 - "$1" "$UNLOCK" <<'PY' || fail "$2: $1"
import sys
fields = dict(kv.split("=") for kv in sys.argv[1].split())
unlock = float(sys.argv[2])
highs = [float(d) for d in fields["high_s"].split(",") if d != "-"]
ok = fields["first"] == "0" and fields["last"] == "0" and len(highs) == 1
sys.exit(0 if ok and unlock - 0.3 <= highs[0] <= unlock + 1.5 else 1)
PY
    ok "$2: one unlock of $(echo "$1" | sed 's/.*high_s=\([^ ]*\).*/\1/') s (unlock_time $UNLOCK s), locked before and after ($1)"
}
# door STEP...: in one guest process, with `edged status` loaded once (under emulation loading
# the command takes longer than an unlock lasts): LINE=PULL drives an input through gpio-sim's
# sysfs "pull" (the outside world), "status" prints the lobby door as `edged status --json`
# reports it ("locked=... output=... contact=... why=..."), a number sleeps that many seconds.
door() {
    vm python3 - "$SYSFS" "$@" <<'PY'
import contextlib, io, json, sys, time
from edged.cli import main as cli
from edged.cli import status  # noqa: F401 (loaded before the first step)
sysfs, *steps = sys.argv[1:]
for step in steps:
    if "=" in step:
        line, pull = step.split("=")
        with open(f"{sysfs}/sim_gpio{line}/pull", "w") as f:
            f.write(pull)
    elif step == "status":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli.main(["status", "--json"])
        d = json.loads(out.getvalue())["doors"]["doors"][0]
        print(" ".join(f"{k}={d[k]}" for k in ("locked", "output", "contact", "why")))
    else:
        time.sleep(float(step))
PY
}
expect() {  # expect STATE PATTERN WHAT
    case "$1" in $2) ok "$3: $1" ;; *) fail "$3: $1" ;; esac
}

sample boot
vm systemctl start edged
PID=$(wait_active "" 120) || fail "edged not active on the gpiod factory"
locked_throughout "$(sampled boot)" "start: claimed /dev/$CHIP"
vm journalctl -u edged -b --no-pager -o cat | grep -q "pin factory gpiod" || fail "not the gpiod factory"

# edged asked for pull-ups (the simulator's "pull" is the outside world, which the bias sets): a
# contact reads open until the test closes the door.
sample contact
STATES=$(door 1=pull-down 0.5 status 1=pull-up 0.5 status 1=pull-down 0.5 status)
expect "$(echo "$STATES" | sed -n 1p)" "locked=True output=low contact=closed *" "contact driven closed"
expect "$(echo "$STATES" | sed -n 2p)" "locked=True output=low contact=open *" "contact edge (open) in edged status"
expect "$(echo "$STATES" | sed -n 3p)" "locked=True output=low contact=closed *" "contact edge (closed) in edged status"
locked_throughout "$(sampled contact)" "contact edges: the lock stays locked"

sample grant
auth gp-1 | grep -q '"pass":true' || fail "grant refused"
sleep $((UNLOCK + 2))
one_unlock "$(sampled grant)" "grant (remote auth) and re-lock"

sample rex
STATE=$(door 2=pull-down 0.3 status 2=pull-up)  # pressed, edged status, released
expect "$STATE" "locked=False output=high *why=egress" "exit-button edge in edged status while pressed"
sleep $((UNLOCK + 1))
one_unlock "$(sampled rex)" "exit-button edge: egress unlock, re-locked"

sample reload
vm systemctl reload edged || fail "reload"
sleep 2
[ "$(vm systemctl show -p MainPID --value edged)" = "$PID" ] || fail "reload restarted edged"
locked_throughout "$(sampled reload)" "systemctl reload (same pid)"

sample kill
vm kill -KILL "$PID"
NEW=$(wait_active "$PID" 60) || fail "not restarted after SIGKILL"
locked_throughout "$(sampled kill)" "SIGKILL and systemd's restart (pid $PID -> $NEW)"

sample stop
vm systemctl stop edged
locked_throughout "$(sampled stop)" "systemctl stop"
echo "  GPIO stage: $((SECONDS - GPIO_STARTED)) s"

vm systemctl poweroff || true
say "all checks passed"
echo "vm-test: $((25 + (POWER_CUTS > 0))) passed, 0 failed"
