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
from store_testing import BACKENDS, Database, create_postgres_database, drop_postgres_database

from service.app import create_app
from service.config import Settings

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def factory(tmp_path_factory: pytest.TempPathFactory) -> FactoryBundle:
    return build_bundle(tmp_path_factory.mktemp("factory") / "bundle")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_stores` that use a store run on SQLite and on PostgreSQL."""
    if "store_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_stores"):
        metafunc.parametrize("store_backend", BACKENDS)


@pytest.fixture
def store_backend() -> str:
    """SQLite, unless the test is marked `both_stores` (then parametrized over both)."""
    return "sqlite"


@pytest.fixture
def make_database(store_backend: str, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """`make_database()`: another fresh store of the test's backend (dropped after the test)."""
    made: list[Database] = []

    def make() -> Database:
        data_dir = tmp_path / ("data" if not made else f"data-{len(made)}")
        url = create_postgres_database() if store_backend == "postgresql" else None
        made.append(Database(store_backend, data_dir, url))
        return made[-1]

    yield make
    for database in made:
        for store in database.opened:
            store.close()
        if database.url is not None:
            drop_postgres_database(database.url)


@pytest.fixture
def database(make_database: Callable[[], Database]) -> Database:
    """The test's store: SQLite in `tmp_path / "data"`, or a fresh PostgreSQL database."""
    return make_database()


@pytest.fixture
def make_settings(factory: FactoryBundle, database: Database) -> Callable[..., Settings]:
    """Settings for the factory bundle with the test's store (a per-test data dir); keyword overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"bundle": factory.path, "data_dir": database.data_dir, "store_url": database.url}
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
