"""docker-compose.yml and its GPU override: valid Compose files that keep the deployment's promises.

No Docker engine runs here, so the files are checked against the Compose specification's JSON
schema (tests/deploy/compose-spec.json, see tests/deploy/README.md) and for the structure that
`docker compose up` relies on.
"""

import json
from pathlib import Path

import jsonschema
import pytest

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


def test_api_starts_after_redis_is_healthy_and_the_offline_job_completed(compose: dict) -> None:
    assert compose["services"]["api"]["depends_on"] == {
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


def test_api_serves_port_8000_with_redis_a_data_volume_and_an_api_key(compose: dict) -> None:
    api = compose["services"]["api"]
    assert api["build"]["dockerfile"] == "docker/service.Dockerfile"
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    env = api["environment"]
    assert env["CLIPER_REDIS_URL"] == "redis://redis:6379/0"
    assert env["CLIPER_API_KEY"] == "${CLIPER_API_KEY:-change-me-local-only}"
    data_volume = f"api-data:{env['CLIPER_DATA_DIR']}"
    assert data_volume in api["volumes"] and "api-data" in compose["volumes"]


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
