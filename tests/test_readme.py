"""README stays true: CI runs its two set-up commands verbatim, and its quickstart code runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_commands_verbatim():
    commands = [b.strip() for b in _blocks("bash")[:2]]
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"{command!r} is not a line of .ci/run"
    assert "pytest" in commands[1]


@pytest.mark.slow  # runs the README's code blocks
def test_readme_python_snippets_run():
    for code in _blocks("python"):
        exec(compile(code, "README.md", "exec"), {})
