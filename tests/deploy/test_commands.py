"""The commands the containers run, run here.

Each command is read out of the Dockerfile (ENTRYPOINT / CMD / ENV) and the compose file (command,
environment, volumes, healthcheck) and combined as Docker does; only what a container has and this
machine has not is substituted: a temporary folder for the container's /data (where the volumes
mount), this interpreter's environment for /opt/venv (with the repository on PYTHONPATH, as the
image pip-installs it), the repository file for a file the image COPYs in, 127.0.0.1 for the
compose host names `redis` and `postgres` (the local PostgreSQL, with a database of the test's own
in place of the compose one), and a free port for 8000 (which may be taken here). Containers made
with the same root share their /data, as compose services share named volumes.
"""

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from cliper.bundle import read_bundle

REPO = Path(__file__).resolve().parents[2]
Completed = subprocess.CompletedProcess[str]
# A small synthetic shop and the pipeline's smoke profile: `docker compose run offline --fast`.
SMALL_SHOP = {"SYNTH_ARGS": "--items 150 --users 80 --corpus-items 100"}
# The PostgreSQL of these machines; PGPORT and PGUSER (a superuser) point at another.
POSTGRES_PORT = os.environ.get("PGPORT", "5432")
POSTGRES_ADMIN = ["psql", "-h", "127.0.0.1", "-p", POSTGRES_PORT, "-U", os.environ.get("PGUSER", "postgres"),
                  "-v", "ON_ERROR_STOP=1", "-tAq"]


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` interpolation from the environment of `docker compose up`."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1]) or m[2], value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Container:
    """What one compose service's container runs, mapped onto this machine."""

    def __init__(self, image, service: dict, root: Path, port: int = 8000, database: str | None = None) -> None:
        self.image, self.service, self.root, self.port, self.database = image, service, root, port, database
        (root / "data").mkdir(exist_ok=True)
        self.paths = {"/data": str(root / "data"), "/opt/venv": sys.prefix}
        for copy in image.instructions("COPY"):
            if not copy.flags:
                self.paths[copy.value[-1]] = str(REPO / copy.value[0])

    def local(self, value: str) -> str:
        for container_path, local_path in self.paths.items():
            value = re.sub(rf"{re.escape(container_path)}(?=/|:|$)", local_path, value)
        value = value.replace("redis://redis:", "redis://127.0.0.1:")
        return re.sub(r"@postgres:\d+/(\w+)", lambda m: f"@127.0.0.1:{POSTGRES_PORT}/{self.database or m[1]}", value)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPER_")}
        env["PYTHONPATH"] = str(REPO)
        for name, value in self.image.env.items():
            env[name] = self.local(value).replace("$PATH", os.environ["PATH"])
        for name, value in self.service.get("environment", {}).items():
            env[name] = self.local(interpolate(str(value)))
        if env.get("CLIPER_PORT") == "8000":
            env["CLIPER_PORT"] = str(self.port)
        return env

    @property
    def argv(self) -> list[str]:
        """ENTRYPOINT + (compose `command` or CMD), Docker's rule for exec-form instructions."""
        entrypoint = list(self.image.last("ENTRYPOINT").value) if self.image.instructions("ENTRYPOINT") else []
        command = self.service.get("command") or (
            list(self.image.last("CMD").value) if self.image.instructions("CMD") else []
        )
        return [self.local(arg) for arg in entrypoint + list(command)]

    def volume(self, name: str) -> Path:
        """Where the named volume `name` is mounted in this container, mapped here."""
        target = next(v.split(":")[1] for v in self.service["volumes"] if v.split(":")[0] == name)
        return Path(self.local(target))

    def run(self, *args: str, timeout: float, extra_env: dict[str, str] | None = None) -> Completed:
        """The container's command to completion; `args` as in `docker compose run SERVICE ARGS`."""
        return subprocess.run(
            self.argv + list(args), env=self.env | (extra_env or {}), cwd=self.root,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def healthcheck(self, timeout: float) -> Completed:
        test = self.service["healthcheck"]["test"]
        assert test[0] == "CMD"
        return subprocess.run(test[1:], env=self.env, capture_output=True, text=True, timeout=timeout, check=False)


def psql(sql: str, database: str = "postgres") -> str:
    return subprocess.run(POSTGRES_ADMIN + ["-d", database, "-c", sql], capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()


@contextmanager
def compose_database(postgres: dict) -> Iterator[str]:
    """What the postgres image makes on its first start from POSTGRES_USER, POSTGRES_PASSWORD and
    POSTGRES_DB, in the local server: that user, and a database of this test's own, dropped after."""
    env = {name: interpolate(str(value)) for name, value in postgres["environment"].items()}
    user, password = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]
    psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN "
         f"CREATE ROLE {user} LOGIN PASSWORD '{password}'; END IF; END $$")
    database = f"{env['POSTGRES_DB']}_compose_{uuid.uuid4().hex[:8]}"
    psql(f"CREATE DATABASE {database} OWNER {user}")
    try:
        yield database
    finally:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def bundle_files(bundle: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(bundle.iterdir())}


def wait_until_live(url: str, server: subprocess.Popen, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError(f"nothing answered {url} in {timeout} s (exit code {server.poll()})")


SMOKE_ARGS = ("--fast", "--clip-model", "cliper-tiny")


@pytest.fixture(scope="module")
def built(offline_image, compose: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Container, Completed]:
    """The offline container's first run, on empty volumes: it builds the bundle (about a minute).

    The smoke profile with the tiny random-init CLIP: a CLIP trained for one epoch on a few
    images maps every item to nearly the same feature, which `verify` rightly refuses."""
    offline = Container(offline_image, compose["services"]["offline"], tmp_path_factory.mktemp("compose"))
    return offline, offline.run(*SMOKE_ARGS, timeout=1200, extra_env=SMALL_SHOP)


def test_offline_entrypoint_leaves_an_existing_bundle_alone(offline_image, compose: dict, tmp_path: Path) -> None:
    offline = Container(offline_image, compose["services"]["offline"], tmp_path)
    bundle = offline.volume("bundle")
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": "kept"}')
    result = offline.run(timeout=60)
    assert result.returncode == 0, result.stderr
    assert "already" in result.stdout
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json"]
    assert (bundle / "manifest.json").read_text() == '{"format": "kept"}'
    assert not Path(offline.env["WORK"]).exists()  # no catalog made, nothing trained


def test_api_healthcheck_fails_while_nothing_answers(service_image, compose: dict, tmp_path: Path) -> None:
    api = Container(service_image, compose["services"]["api"], tmp_path, port=free_port())
    started = time.monotonic()
    assert api.healthcheck(timeout=30).returncode != 0
    assert time.monotonic() - started < 10  # well inside the compose `timeout`


def test_postgres_healthcheck_passes_once_the_server_accepts_connections(compose: dict) -> None:
    """pg_isready as compose runs it: 0 against the local server, 2 where nothing answers."""
    test = compose["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD"

    def check(port: str) -> Completed:
        env = os.environ | {"PGPORT": port}  # the container's server listens on the default port
        return subprocess.run(test[1:], env=env, capture_output=True, text=True, timeout=30, check=False)

    up = check(POSTGRES_PORT)
    assert up.returncode == 0 and "accepting connections" in up.stdout, up.stdout + up.stderr
    down = check(str(free_port()))
    assert down.returncode == 2 and "no response" in down.stdout, down.stdout + down.stderr


@pytest.mark.slow
def test_offline_entrypoint_builds_a_verified_bundle_once(built) -> None:
    offline, first = built
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    bundle = offline.volume("bundle")
    assert len(read_bundle(bundle, verify=True).item_ids) > 0  # every file matches its sha256
    before = bundle_files(bundle)
    again = offline.run(*SMOKE_ARGS, timeout=120, extra_env=SMALL_SHOP)
    assert again.returncode == 0 and "already" in again.stdout
    assert bundle_files(bundle) == before


def serve_until_healthy(api: Container, offline: Container) -> str:
    """Runs the API until its healthcheck passes; what it printed."""
    bundle = api.volume("bundle")
    assert bundle == offline.volume("bundle")  # one named volume, written by one, read by the other
    before = bundle_files(bundle)
    server = subprocess.Popen(api.argv, env=api.env, cwd=api.root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        live = wait_until_live(f"http://127.0.0.1:{api.port}/health/live", server, timeout=120)
        assert live.status_code == 200 and live.json()["status"] == "alive"
        check = api.healthcheck(timeout=30)
        assert check.returncode == 0, check.stderr
        ready = httpx.get(f"http://127.0.0.1:{api.port}/health/ready", timeout=5).json()
        assert ready["status"] == "ready" and ready["checks"]["cache"] == "redis ok"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert bundle_files(bundle) == before, "the API wrote into its read-only bundle volume"
    return output


@pytest.mark.slow
def test_api_command_serves_the_bundle_the_offline_job_wrote(built, service_image, compose: dict) -> None:
    """`python -m service` with the compose environment: live, then healthy; the bundle untouched,
    the catalog in PostgreSQL."""
    offline, first = built
    assert first.returncode == 0, "the offline job failed, so compose would not start the API"
    with compose_database(compose["services"]["postgres"]) as database:
        api = Container(service_image, compose["services"]["api"], offline.root, port=free_port(), database=database)
        output = serve_until_healthy(api, offline)
        tables = psql("SELECT count(*) FROM information_schema.tables "
                      "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')", database)
    assert int(tables) > 0, f"the API made no table in its PostgreSQL store\n{output[-2000:]}"
    assert not (Path(api.env["CLIPER_DATA_DIR"]) / "service.sqlite3").exists()
