#!/usr/bin/env bash
# tests/vm/gpio-sim.sh BASE OUT: build the kernel's simulated GPIO chip (gpio-sim) as a module for
# the kernel of the debootstrapped root BASE and write it to OUT (a cache: kept when it exists).
#
# Debian's amd64 kernels (6.1 on bookworm, 6.12 on trixie) have neither CONFIG_GPIO_SIM nor
# CONFIG_GPIO_MOCKUP, nor CONFIG_IRQ_SIM, which gpio-sim needs and which is a bool (built in or
# absent). So gpio-sim.c and kernel/irq/irq_sim.c, from the release's own linux-source package,
# are linked into one out-of-tree module, gpio_sim_edged.ko, built against the release's
# linux-headers for that kernel, with the release's compiler, in a copy of BASE run with chroot
# on the host (native speed: nothing is compiled under emulation). The VM loads it with insmod.
# Needs root and the release's archive (the mirror in BASE's sources.list). ~1 min uncached.
set -euo pipefail
BASE=$1
OUT=$2
[ -s "$OUT" ] && exit 0
KVER=$(basename "$(ls "$BASE"/boot/vmlinuz-* | head -n 1)" | sed 's/^vmlinuz-//')
SERIES=$(echo "$KVER" | cut -d. -f1,2)  # 6.1, 6.12: the linux-source-X.Y package
KB=$(dirname "$OUT")/kbuild-$KVER
rm -rf "$KB" && cp -a "$BASE" "$KB"
in_kb() { chroot "$KB" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_kb apt-get update -q >/dev/null
in_kb apt-get install -y -q --no-install-recommends "linux-headers-$KVER" make xz-utils >/dev/null
# The source of the running kernel's package version where the archive still has it.
VERSION=$(in_kb dpkg-query -W -f='${Version}' "linux-image-$KVER")
mkdir -p "$KB/root/src"
(cd "$KB/root/src" && in_kb sh -c "cd /root/src && { apt-get download -q 'linux-source-$SERIES=$VERSION' \
    || apt-get download -q 'linux-source-$SERIES'; }" >/dev/null)
dpkg-deb --fsys-tarfile "$KB"/root/src/linux-source-*.deb \
    | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' \
    | tar -xJ -C "$KB/root/src" --strip-components=1 --wildcards \
        '*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h' '*/kernel/irq/irq_sim.c'
M=$KB/root/gpio-sim
mkdir -p "$M"
cp "$KB/root/src/drivers/gpio/gpio-sim.c" "$KB/root/src/drivers/gpio/gpiolib.h" \
    "$KB/root/src/kernel/irq/irq_sim.c" "$M/"
# irq_to_desc() is not exported to modules: generic_handle_irq() runs the same handler
# (handle_simple_irq, set when the simulator maps the interrupt) and is.
sed -i 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' "$M/irq_sim.c"
printf 'obj-m := gpio-sim-edged.o\ngpio-sim-edged-y := gpio-sim.o irq_sim.o\n' >"$M/Kbuild"
in_kb make -s -C "/usr/src/linux-headers-$KVER" M=/root/gpio-sim modules >"$KB/build.log" 2>&1 \
    || { tail -n 40 "$KB/build.log"; echo "gpio-sim.sh: build failed" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
cp "$M/gpio-sim-edged.ko" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
rm -rf "$KB"  # kept when a step fails, to look at
echo "gpio-sim.sh: built $(basename "$OUT") for $KVER from linux-source-$SERIES"
