"""The README's first lines: two commands, each alone in its own block under its own heading
(copying the first never runs the test suite), the main job first; the test command is the one
CI runs; what the install and the quickstart cost, and how much its figures vary, are stated."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks(text: str) -> list[tuple[str, str]]:
    """(heading above, code) of each fenced block, in order."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```\w*\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1)
        else:
            out.append((heading, m.group(2)))
    return out


def test_the_first_two_blocks_are_the_main_job_then_the_tests():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (h1, main_job), (h2, tests) = _blocks(readme)[:2]
    assert h1 != h2 and h1.startswith("## ") and h2.startswith("## ")
    assert main_job.count("\n") == 1 and tests.count("\n") == 1  # one command per block
    assert "scalelab run configs/quickstart.yaml" in main_job and "pytest" not in main_job
    assert "pytest" in tests and "scalelab run" not in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests.strip() in ci  # CI runs the README's test command
    head = readme[: readme.index("scalelab is a scaling-law experiment service.")]
    assert re.search(r"\d(\.\d)? GB", head) and re.search(r"\d+ minutes", head)  # install size, time
    assert "vary between seeds and between machines" in head and "seed 1" in head
