"""A short smoke run of `loadtests/run`: upstream, gateway and locust headless, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
RUN = Path(__file__).resolve().parent.parent / "loadtests" / "run"


def test_a_10_second_locust_run_passes_its_thresholds(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--duration",
            "10",
            "--users",
            "10",
            "--spawn-rate",
            "10",
            "--max-failure-ratio",
            "0",
            "--max-p95-ms",
            "500",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 failures" in result.stdout
    assert (tmp_path / "report.html").stat().st_size > 0
    stats = (tmp_path / "locust_stats.csv").read_text()
    for name in (
        "valid GET",
        "valid POST",
        "401 unknown",
        "401 revoked",
        "churn: old secret",
        "SSE stream",
    ):
        assert name in stats


def test_a_run_over_its_latency_threshold_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--duration",
            "3",
            "--users",
            "5",
            "--max-p95-ms",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "FAILED: p95" in result.stderr
