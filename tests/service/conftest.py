"""Shared fixtures of the service tests: one real bundle per session, a fresh app per test."""

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bundle_factory import FactoryBundle, build_bundle
from fastapi.testclient import TestClient
from service_testing import RedisServer

from service.app import create_app
from service.config import Settings

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    return build_bundle(tmp_path_factory.mktemp("factory") / "bundle")


@pytest.fixture
def make_settings(factory: FactoryBundle, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the factory bundle with a per-test data dir; keyword overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"bundle": factory.path, "data_dir": tmp_path / "data"}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> ClientFactory:
    """`with make_client(**settings) as client:` runs the app's lifespan around the block."""

    @contextmanager
    def make(**overrides: Any) -> Iterator[TestClient]:
        with TestClient(create_app(make_settings(**overrides))) as client:
            yield client

    return make


@pytest.fixture
def client(make_client: ClientFactory) -> Iterator[TestClient]:
    with make_client() as client:
        yield client


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server (killed with `stop()`, restarted on its port with `start()`)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()
