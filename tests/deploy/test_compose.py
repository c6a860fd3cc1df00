"""docker-compose.yml and its GPU override: valid Compose files that keep the deployment's promises.

No Docker engine runs here, so the files are checked against the Compose specification's JSON
schema (tests/deploy/compose-spec.json, see tests/deploy/README.md) and for the structure that
`docker compose up` relies on; the proxy's nginx configuration is parsed with crossplane (nginx's
own parser, ported: unknown directives, directives out of context, wrong argument counts).
"""

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import crossplane
import jsonschema
import pytest

from service.config import Settings

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
Validator = jsonschema.validators.validator_for(SCHEMA)


def schema_errors(document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Validator(SCHEMA).iter_errors(document)]


def test_vendored_schema_is_a_valid_json_schema() -> None:
    Validator.check_schema(SCHEMA)
    assert SCHEMA["title"] == "Compose Specification"


@pytest.mark.parametrize("name", ["compose", "gpu_override", "gpu_compose"])
def test_compose_files_follow_the_compose_specification(name: str, request: pytest.FixtureRequest) -> None:
    assert schema_errors(request.getfixturevalue(name)) == []


def test_schema_rejects_a_misspelt_dependency_condition(compose: dict) -> None:
    """The validation has teeth: a typo that `docker compose` would refuse is caught."""
    api = dict(compose["services"]["api"], depends_on={"redis": {"condition": "service_healthy_"}})
    broken = dict(compose, services=dict(compose["services"], api=api))
    assert schema_errors(broken)


def test_redis_persists_append_only_on_a_named_volume_and_has_a_healthcheck(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert redis["command"][-2:] == ["--appendonly", "yes"]
    volume, target = redis["volumes"][0].split(":")
    assert volume in compose["volumes"] and target == "/data"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_is_pinned_keeps_its_data_on_a_named_volume_and_answers_pg_isready(compose: dict) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)*-alpine", postgres["image"])  # official image, major pinned
    volume, target = postgres["volumes"][0].split(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"
    env = postgres["environment"]
    check = postgres["healthcheck"]["test"]
    assert check[:2] == ["CMD", "pg_isready"]
    options = dict(zip(check[2::2], check[3::2]))
    # TCP, not the socket that the image's first-run initialisation serves alone
    assert options == {"-h": "127.0.0.1", "-U": env["POSTGRES_USER"], "-d": env["POSTGRES_DB"]}


def test_api_store_url_is_the_postgres_service_with_its_user_password_and_database(compose: dict) -> None:
    env = compose["services"]["postgres"]["environment"]
    url = urlsplit(compose["services"]["api"]["environment"]["CLIPER_STORE_URL"])
    assert url.scheme == "postgresql"
    assert url.hostname in compose["services"] and url.hostname == "postgres" and url.port == 5432
    assert url.username == env["POSTGRES_USER"] and url.path == f"/{env['POSTGRES_DB']}"
    assert url.password == env["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-change-me-local-only}"


def test_api_starts_after_postgres_and_redis_are_healthy_and_the_offline_job_completed(compose: dict) -> None:
    assert compose["services"]["api"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "offline": {"condition": "service_completed_successfully"},
    }


def test_offline_job_is_one_shot_and_writes_the_bundle_volume_the_api_reads(compose: dict) -> None:
    offline, api = compose["services"]["offline"], compose["services"]["api"]
    assert offline["restart"] == "no"
    assert offline["build"]["dockerfile"] == "docker/offline.Dockerfile"
    assert offline["volumes"] == [f"bundle:{offline['environment']['BUNDLE']}"]
    assert "bundle" in compose["volumes"]
    assert f"bundle:{api['environment']['CLIPER_BUNDLE']}:ro" in api["volumes"]


def test_api_publishes_no_port_and_has_redis_a_data_volume_and_an_api_key(compose: dict) -> None:
    """Several replicas (`--scale api=3`) cannot share one published host port: the proxy has it."""
    api = compose["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/service.Dockerfile"
    assert "ports" not in api
    env = api["environment"]
    assert env["CLIPER_REDIS_URL"] == "redis://redis:6379/0"
    assert env["CLIPER_API_KEY"] == "${CLIPER_API_KEY:-change-me-local-only}"
    data_volume = f"api-data:{env['CLIPER_DATA_DIR']}"
    assert data_volume in api["volumes"] and "api-data" in compose["volumes"]


def test_proxy_publishes_port_8000_on_loopback_with_the_committed_config(compose: dict, repo: Path) -> None:
    proxy = compose["services"]["proxy"]
    assert re.fullmatch(r"nginx:\d+\.\d+(\.\d+)?-alpine", proxy["image"])
    assert proxy["ports"] == ["127.0.0.1:8000:8000"]
    assert proxy["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert (repo / "deploy" / "nginx.conf").is_file()
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}


def nginx_config(path: Path) -> dict:
    """The parsed file, or the parser's errors: unknown directives and wrong contexts included."""
    return crossplane.parse(str(path), strict=True, combine=True)


def directives(block: list[dict], name: str) -> list[dict]:
    return [d for d in block if d["directive"] == name]


def only(block: list[dict], name: str) -> dict:
    found = directives(block, name)
    assert len(found) == 1, f"{len(found)} {name} directives"
    return found[0]


def test_proxy_config_parses_and_spreads_requests_over_every_api_replica(
    compose: dict, repo: Path, service_image
) -> None:
    parsed = nginx_config(repo / "deploy" / "nginx.conf")
    assert parsed["status"] == "ok", parsed["errors"]
    http = only(parsed["config"][0]["parsed"], "http")["block"]
    # Docker's embedded DNS, asked again while running: replicas added by --scale are followed
    assert only(http, "resolver")["args"][0] == "127.0.0.11"
    upstream = only(http, "upstream")
    servers = directives(upstream["block"], "server")
    api_port = service_image.env["CLIPER_PORT"]
    assert [s["args"] for s in servers] == [[f"api:{api_port}", "resolve"]]
    assert "api" in compose["services"]
    server = only(http, "server")["block"]
    published = compose["services"]["proxy"]["ports"][0].rsplit(":", 1)[1]
    assert only(server, "listen")["args"] == [published]
    location = only(server, "location")
    assert location["args"] == ["/"]
    assert only(location["block"], "proxy_pass")["args"] == [f"http://{upstream['args'][0]}"]


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_proxy_limits_let_the_api_answer_first(repo: Path) -> None:
    """nginx drops idle upstream connections before uvicorn does (no request on a closed one), and
    lets through bodies a little over the API's limit, so the API's own 413 (JSON) answers them."""
    http = only(nginx_config(repo / "deploy" / "nginx.conf")["config"][0]["parsed"], "http")["block"]
    upstream = only(http, "upstream")["block"]
    assert seconds(only(upstream, "keepalive_timeout")["args"][0]) < Settings.model_fields["timeout_keep_alive_s"].default
    body = only(only(http, "server")["block"], "client_max_body_size")["args"][0]
    assert re.fullmatch(r"\d+m", body)
    assert int(body[:-1]) * 2**20 > Settings.model_fields["max_body_bytes"].default


@pytest.mark.parametrize(
    ("original", "broken", "error"),
    [
        ("proxy_pass http://api;", "proxy_passs http://api;", 'unknown directive "proxy_passs"'),
        ("keepalive 32;", "keepalive;", 'invalid number of arguments in "keepalive"'),
        ("listen 8000;", "listen 8000;\n        resolve;", 'unknown directive "resolve"'),
        ("        zone api 64k;", "        location / {}", '"location" directive is not allowed here'),
    ],
)
def test_proxy_config_check_refuses_a_broken_config(
    repo: Path, tmp_path: Path, original: str, broken: str, error: str
) -> None:
    text = (repo / "deploy" / "nginx.conf").read_text()
    assert original in text
    path = tmp_path / "nginx.conf"
    path.write_text(text.replace(original, broken, 1))
    parsed = nginx_config(path)
    assert parsed["status"] == "failed"
    assert any(error in e["error"] for e in parsed["errors"]), parsed["errors"]


def test_api_healthcheck_asks_for_readiness(compose: dict, service_image) -> None:
    """The compose healthcheck is the image's HEALTHCHECK (same command), on /health/ready."""
    test = compose["services"]["api"]["healthcheck"]["test"]
    assert "/health/ready" in test[-1]
    assert test == list(service_image.last("HEALTHCHECK").value)


@pytest.mark.parametrize("service", ["offline", "api"])
def test_gpu_override_builds_cuda_images_and_reserves_a_gpu(gpu_compose: dict, service: str) -> None:
    spec = gpu_compose["services"][service]
    assert spec["build"]["args"] == {"DEVICE": "cuda"}
    assert spec["build"]["dockerfile"].startswith("docker/")  # kept from the base file by the merge
    assert spec["image"].endswith(":cuda")
    devices = spec["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_cpu_file_reserves_no_gpu(compose: dict) -> None:
    assert all("deploy" not in spec for spec in compose["services"].values())
    assert {s["build"]["args"]["DEVICE"] for s in compose["services"].values() if "build" in s} == {"cpu"}


def test_every_cliper_variable_set_for_the_api_is_a_service_setting(compose: dict, service_image) -> None:
    from service.config import Settings

    settings = {f"CLIPER_{name.upper()}" for name in Settings.model_fields}
    given = set(compose["services"]["api"]["environment"]) | set(service_image.env)
    assert {name for name in given if name.startswith("CLIPER_")} <= settings
