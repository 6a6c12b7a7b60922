"""The docs stay true: every Python block in docs/ runs verbatim, and the site builds strictly.

Blocks of one page run in order in one namespace (a page is read top to bottom, so a later block
may use names an earlier one defined); pages do not share names. A block that trains at the
size a reader should use is run at a smaller size through SHRINK, an explicit per-page list of
textual replacements (each must match, so the table cannot go stale silently).
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# page -> [(text in the page, text run instead)]: data and training sizes only, never API calls.
SHRINK = {
    "likelihood.md": [("data.sample(4096", "data.sample(256")],
    "training.md": [("steps=2000", "steps=20"), ("100_000", "2_000"), ("x[:500]", "x[:50]")],
}
PAGES = sorted(p for p in DOCS.rglob("*.md") if "```python" in p.read_text())


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.slow  # runs every docs page
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_docs_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__docs__"}
    text = page.read_text()
    for old, new in SHRINK.get(page.name, []):
        assert old in text, f"SHRINK entry {old!r} no longer occurs in {page.name}"
        text = text.replace(old, new)
    blocks = python_blocks(text)
    assert blocks
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page.name} block {i + 1}", "exec"), namespace)


def test_every_docs_page_with_code_is_collected():
    assert len(PAGES) >= 6


def test_mkdocs_build_strict(tmp_path):
    if shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'); .ci/run installs it")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
