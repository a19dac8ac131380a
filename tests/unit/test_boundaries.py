"""Architecture rules that a test can hold."""

import subprocess
import sys


def test_services_never_import_torch():
    code = (
        "import sys, services.worker, services.cli, services.restorer\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'export'))\n"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"services pulled in: {result.stdout} {result.stderr}"
