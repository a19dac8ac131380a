"""The README-blocks test's extractor and runner (issue 13, item 1): markers, order, and a broken block failing."""

from __future__ import annotations

import os

import pytest

from tests.support.processes import REPO
from tests.support.readme_blocks import ReadmeMarkerError, run_blocks, script, shell_blocks, substitute

DOC = """# Title

```bash
echo one > one.txt
```

Some text.

<!-- readme-test: skip (installs things) -->
```bash
pip install something
```

```text
not shell
```

<!-- readme-test: skip-lines "python3 -m venv" (the test has its environment) -->
```sh
python3 -m venv .venv
echo two >> one.txt
```
"""


def test_blocks_come_in_order_with_their_markers_applied():
    blocks = shell_blocks(DOC)
    assert [(b.line, b.skipped) for b in blocks] == [(3, False), (10, True), (19, False)]
    assert blocks[2].text == "echo two >> one.txt\n"
    assert "pip install" not in script(blocks)


@pytest.mark.parametrize("broken, message", [
    (DOC.replace("readme-test: skip (", "readme-test: skipp ("), "unknown readme-test action"),
    (DOC.replace('"python3 -m venv"', '"virtualenv"'), "in no line of the block"),
    (DOC.replace("<!-- readme-test: skip (installs things) -->\n", "<!-- readme-test: skip (installs things) -->\nx\n"),
     "must be the last thing above"),
])
def test_a_stale_or_misplaced_marker_is_an_error_not_a_silent_skip(broken, message):
    with pytest.raises(ReadmeMarkerError, match=message):
        shell_blocks(broken)


def test_a_replacement_found_in_no_running_block_is_an_error():
    with pytest.raises(ReadmeMarkerError, match="in no block that runs"):
        substitute(shell_blocks(DOC), {"pip install": "true"})  # only in a skipped block


def test_the_blocks_run_in_order_in_one_shell(tmp_path):
    result = run_blocks(shell_blocks(DOC), tmp_path, dict(os.environ), timeout=30)
    assert result.returncode == 0, result.output
    assert (tmp_path / "one.txt").read_text() == "one\ntwo\n"


def test_a_broken_copy_of_the_readme_fails_at_its_block(tmp_path):
    """The real README with one block broken as issue 13 found it (a command that fails: here the first block's first
    command) stops there, names the block and runs nothing after it."""
    readme = (REPO / "README.md").read_text()
    blocks = shell_blocks(readme)
    first = next(b for b in blocks if not b.skipped)
    broken = readme.replace(first.text, "false  # broken on purpose\n" + first.text, 1)
    broken_blocks = shell_blocks(broken)
    # Every block after the broken one is replaced by a harmless marker file: the test needs no services.
    runnable = [b for b in broken_blocks if not b.skipped]
    stand_ins = [runnable[0]] + [b.__class__(b.line, f"touch ran-{b.line}\n", False) for b in runnable[1:]]
    result = run_blocks(stand_ins, tmp_path, dict(os.environ), timeout=30)
    assert result.returncode != 0
    assert result.failed_block == first.line
    assert not list(tmp_path.glob("ran-*"))


def test_the_readme_marks_only_what_cannot_run_in_a_test():
    blocks = shell_blocks((REPO / "README.md").read_text())
    skipped = [b for b in blocks if b.skipped]
    assert all("pytest" in b.text for b in skipped), [b.text for b in skipped]  # only the test-suite blocks
    runnable = "".join(b.text for b in blocks if not b.skipped)
    assert "pip install" not in runnable and "<job id>" not in runnable
    for command in ("imgrestore run", "imgrestore worker", "imgrestore submit", "imgrestore api", "curl",
                    "imgrestore backfill", "imgrestore watch", "imgrestore monitor --once"):
        assert command in runnable, command
