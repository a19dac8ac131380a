"""Runs the imgrestore CLI and prints its own peak RSS (MiB) as the last stderr line: ``PEAK_RSS_MB=<n>``."""

import atexit
import resource
import sys

from services.cli import main


@atexit.register
def _report() -> None:
    print(f"PEAK_RSS_MB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}", file=sys.stderr)


if __name__ == "__main__":
    sys.argv[0] = "imgrestore"
    main()
