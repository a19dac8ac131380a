"""The README's shell blocks as a newcomer pastes them, in order, into one terminal (issue 13, item 1).

A block that must not run in a test says so in the README itself, in an HTML comment (invisible when rendered) right
above its fence:

    <!-- readme-test: skip (why) -->                        the whole block
    <!-- readme-test: skip-lines "text" "text" (why) -->   the lines containing any of the quoted texts

A marker that matches nothing, or names an unknown action, is an error: a stale marker must not silently skip a block
someone has since rewritten.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*readme-test:\s*(?P<action>[\w-]+)(?P<rest>.*?)-->\s*\Z", re.S)


class ReadmeMarkerError(ValueError):
    """A ``readme-test`` marker that cannot be applied as written."""


@dataclass(frozen=True)
class ShellBlock:
    line: int  # of the opening fence, 1-based
    text: str  # what runs: the block less the lines its marker skips
    skipped: bool  # the whole block is marked skip


def shell_blocks(markdown: str) -> list[ShellBlock]:
    """Every fenced shell block of ``markdown`` in order, with its marker applied."""
    blocks: list[ShellBlock] = []
    previous_end = 0
    for fence in _FENCE.finditer(markdown):
        between = markdown[previous_end:fence.start()]
        previous_end = fence.end()
        line = markdown.count("\n", 0, fence.start()) + 1
        marker = _MARKER.search(between.rstrip() + "\n") if "readme-test" in between else None
        if "readme-test" in between and marker is None:
            raise ReadmeMarkerError(f"line {line}: a readme-test marker must be the last thing above a block's fence")
        if fence.group("lang") not in SHELL_LANGUAGES:
            if marker:
                raise ReadmeMarkerError(f"line {line}: a readme-test marker above a block that is not shell")
            continue
        body = fence.group("body")
        if marker is None:
            blocks.append(ShellBlock(line, body, skipped=False))
        elif marker["action"] == "skip":
            blocks.append(ShellBlock(line, body, skipped=True))
        elif marker["action"] == "skip-lines":
            blocks.append(ShellBlock(line, _without_lines(body, marker["rest"], line), skipped=False))
        else:
            raise ReadmeMarkerError(f"line {line}: unknown readme-test action {marker['action']!r} "
                                    "(use skip or skip-lines)")
    return blocks


def _without_lines(body: str, rest: str, line: int) -> str:
    texts = re.findall(r'"([^"]+)"', rest)
    if not texts:
        raise ReadmeMarkerError(f'line {line}: skip-lines names no "text" to skip')
    lines = body.splitlines(keepends=True)
    for text in texts:
        if not any(text in candidate for candidate in lines):
            raise ReadmeMarkerError(f"line {line}: skip-lines text {text!r} is in no line of the block below it")
    return "".join(candidate for candidate in lines if not any(text in candidate for text in texts))


def substitute(blocks: list[ShellBlock], replacements: dict[str, str]) -> list[ShellBlock]:
    """The blocks with each key replaced (a test's own ports and Redis database); a key found nowhere is an error."""
    runnable = [b for b in blocks if not b.skipped]
    for old in replacements:
        if not any(old in b.text for b in runnable):
            raise ReadmeMarkerError(f"{old!r} is in no block that runs: update the test's replacements")
    out = []
    for block in blocks:
        text = block.text
        for old, new in replacements.items():
            text = text.replace(old, new)
        out.append(ShellBlock(block.line, text, block.skipped))
    return out


def script(blocks: list[ShellBlock]) -> str:
    """One bash script running the blocks in order; the first failing command stops it and names its block."""
    parts = ["set -eE -o pipefail",
             "trap 'echo \"README block at line $README_BLOCK failed (exit $?): $BASH_COMMAND\" >&2' ERR"]
    for block in blocks:
        if not block.skipped:
            parts += [f"README_BLOCK={block.line}", f"echo '### README block at line {block.line}' >&2",
                      block.text]
    parts.append("echo '### README blocks all ran' >&2")
    return "\n".join(parts) + "\n"


@dataclass
class BlocksRun:
    returncode: int
    output: str

    @property
    def failed_block(self) -> int | None:
        found = re.findall(r"README block at line (\d+) failed", self.output)
        return int(found[-1]) if found else None


def run_blocks(blocks: list[ShellBlock], cwd: Path, env: dict[str, str], timeout: float) -> BlocksRun:
    """Runs ``script(blocks)`` in its own process group, and afterwards ends the whole group: the workers, API and S3
    server the blocks start in the background stop with it. Output goes to a file, not a pipe, which those background
    processes would hold open after the script ends."""
    log = cwd / ".readme-blocks.log"
    with log.open("w") as sink:
        process = subprocess.Popen(["bash", "-c", script(blocks)], cwd=cwd, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
            note = ""
        except subprocess.TimeoutExpired:
            returncode, note = -1, f"\n### timed out after {timeout} s"
        finally:
            _end_group(process.pid)
    return BlocksRun(returncode, log.read_text(errors="replace") + note)


def _end_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
