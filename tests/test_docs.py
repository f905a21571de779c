"""The documentation site builds without a warning, and the README's links into it lead
somewhere (issue 16)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documentation_site_builds_without_warnings(tmp_path: Path) -> None:
    # strict: a broken link or anchor, a page missing from the nav, or a nav entry without
    # its page fails the build. The theme's notice about MkDocs 2.0 is not about this site.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (site / "index.html").is_file()
    assert (site / "reference" / "configuration" / "index.html").is_file()


def test_every_link_in_the_readme_leads_to_a_file_of_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README.md links to {target}, which is not there"
