"""`python -m service` in a subprocess, over real HTTP; and the settings it reads."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from bundle_factory import FactoryBundle, prototype_item
from service_testing import free_port, item_body

from service.config import Settings
from service.probe import wait_until_ready

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_python_m_service_serves_http(factory: FactoryBundle, tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = {**os.environ, "CLIPER_API_KEY": "k", "CLIPER_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--bundle", str(factory.path), "--port", str(port), "--log-level", "warning",
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, process, output=lambda: process.stdout.read().decode())
        created = httpx.post(f"{base}/items", json=item_body(prototype_item(0, "http-item")),
                             headers={"X-API-Key": "k"})
        assert created.status_code == 201, created.text
        for _ in range(8):  # a new connection each time, so both workers answer (when there are two)
            recs = httpx.get(f"{base}/users/user-000/recommendations", params={"k": 3}).json()
            assert recs["items"][0]["item_id"] == "http-item"  # user-000 likes cluster 0; its prototype
        metrics = httpx.get(f"{base}/metrics").text
        assert 'cliper_recommendations_total{source="model"} 8.0' in metrics  # summed over the workers
        assert httpx.post(f"{base}/items", json=item_body(prototype_item(1, "x"))).status_code == 401
    finally:
        process.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status reports it
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)
    assert "leaked" not in process.stdout.read().decode()  # e.g. multiprocessing locks of the workers


def test_settings_from_environment_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIPER_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("CLIPER_IMAGE_URL_ALLOW_LIST", "https://cdn.example.com/img/")
    monkeypatch.setenv("CLIPER_BUNDLE", str(tmp_path / "b"))
    settings = Settings(_cli_parse_args=["--port", "9123", "--redis-url", "redis://r:6379/0"])
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.image_url_allow_list == ["https://cdn.example.com/img/"]
    assert (settings.port, settings.redis_url) == (9123, "redis://r:6379/0")
    assert settings.resolved_data_dir == tmp_path / "service-data"
