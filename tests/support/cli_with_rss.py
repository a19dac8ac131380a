"""Runs the imgrestore CLI and prints its own peak RSS (MiB) as the last stderr line: ``PEAK_RSS_MB=<n>``.

The peak is ``VmHWM`` of /proc/self/status, the high-water mark of this process's own address space. Not
``ru_maxrss``: Linux carries that across exec from the forked parent, so a CLI started by a 200 MB pytest would
report at least 200 MB whatever it did itself.
"""

import atexit
import sys
from pathlib import Path

from services.cli import main


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


@atexit.register
def _report() -> None:
    print(f"PEAK_RSS_MB={peak_rss_mb():.1f}", file=sys.stderr)


if __name__ == "__main__":
    sys.argv[0] = "imgrestore"
    main()
