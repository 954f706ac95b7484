"""Sample one GPIO line's level from sysfs every few ms until SIGTERM, then print a summary.

Runs inside the VM (``tests/vm/vm-test.sh``, GPIO stage), outside edged: ``python3
gpio-sample.py VALUE_FILE OUT``. VALUE_FILE is gpio-sim's ``sim_gpioN/value`` of the line (what
the consumer drives on an output). OUT gets ``ready`` once the first sample is taken, then on
SIGTERM one line: ``samples=N max_gap_ms=G highs=K high_s=D1,D2,... first=V last=V``, where a
high period still running at the end counts up to the end.
"""

import os
import signal
import sys
import time

path, out = sys.argv[1:]
fd = os.open(path, os.O_RDONLY)
stop = False


def _stop(signum, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, _stop)
samples, gap, highs = 0, 0.0, []
last_t = time.monotonic()
first = value = int(os.pread(fd, 8, 0))
high_since = last_t if value else None
with open(out, "w") as f:
    f.write("ready\n")
while not stop:
    now = time.monotonic()
    level = int(os.pread(fd, 8, 0))
    samples += 1
    gap = max(gap, now - last_t)
    last_t = now
    if level and high_since is None:
        high_since = now
    elif not level and high_since is not None:
        highs.append(now - high_since)
        high_since = None
    value = level
    time.sleep(0.002)
if high_since is not None:
    highs.append(time.monotonic() - high_since)
with open(out, "a") as f:
    durations = ",".join(f"{d:.3f}" for d in highs) or "-"
    f.write(
        f"samples={samples} max_gap_ms={gap * 1000:.0f} highs={len(highs)} high_s={durations}"
        f" first={first} last={value}\n"
    )
