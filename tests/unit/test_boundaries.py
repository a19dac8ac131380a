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


# Packages only the queued verbs, the API and S3 inputs use. `imgrestore run` on a local file must start without
# them: they were ~170 of its 800 modules and a third of its start-up (bench/results/startup.md).
SERVICE_ONLY = ("celery", "kombu", "billiard", "boto3", "botocore", "s3transfer", "fastapi", "starlette", "uvicorn",
                "redis", "prometheus_client")


def test_run_on_a_local_file_imports_no_service_packages(tmp_path):
    import numpy as np
    from PIL import Image

    page = tmp_path / "page.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 80), dtype=np.uint8)).save(page)
    code = (
        "import sys\n"
        "from services.cli import main\n"
        f"sys.argv = ['imgrestore', 'run', '--task', 'denoise', '--profile', 'document', {str(page)!r}, "
        f"'-o', {str(tmp_path / 'out')!r}, '--json']\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        f"    print(sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVICE_ONLY!r})), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "page.png").is_file()  # the model did run: not an early exit
    assert result.stderr.strip().splitlines()[-1] == "[]", f"imported for a local run: {result.stderr}"


def test_every_verb_module_is_a_verb_of_the_command():
    """Verbs are imported when named (services.cli.common.VerbGroup): a module missing from VERBS would never be."""
    from pathlib import Path

    import click

    import services.cli
    from services.cli import cli
    from services.cli.common import VerbGroup

    modules = {p.stem for p in Path(services.cli.__file__).parent.glob("*.py")}
    assert set(VerbGroup.VERBS) == modules - {"__init__", "__main__", "common"}
    ctx = click.Context(cli)
    assert all(isinstance(cli.get_command(ctx, name), click.Command) for name in cli.list_commands(ctx))
