"""Liveness, readiness, Prometheus metrics, OpenAPI docs."""

import time

from bundle_factory import FactoryBundle, prototype_item
from fastapi.testclient import TestClient
from service_testing import RedisServer, item_body

from service.api.schemas import Recommendations
from service.app import create_app
from service.config import Settings


def samples(client: TestClient) -> dict[str, float]:
    lines = client.get("/metrics").text.splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line and line[0] != "#"}


def test_live_and_ready(client: TestClient, factory: FactoryBundle) -> None:
    assert client.get("/health/live").json() == {"status": "alive", "checks": {}}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["bundle"] == f"verified {factory.manifest.bundle_version}"
    assert checks["encoders"] == "warm on CPUExecutionProvider" and checks["cache"] == "embedded ok"
    assert checks["index"] == "FAISS on CPU"


def test_ready_is_503_before_start_up() -> None:
    client = TestClient(create_app(Settings(bundle="/nonexistent")))  # no `with`: lifespan not run
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["checks"] == {"startup": "not finished"}
    assert client.get("/health/live").status_code == 200


def test_ready_while_redis_is_down(make_client, redis_server: RedisServer) -> None:
    """The cache is an optimisation: without Redis every request is still served, so readiness
    stays 200 (a load balancer keeps the replica) and says the cache is degraded."""
    with make_client(redis_url=redis_server.url, redis_retry_s=0.2, redis_timeout_s=0.2) as client:
        up = client.get("/health/ready")
        assert up.status_code == 200 and up.json()["status"] == "ready"
        assert up.json()["checks"]["cache"] == "redis ok" and samples(client)["cliper_cache_up"] == 1
        redis_server.stop()
        for _ in range(3):
            probe = client.get("/health/ready")
            assert probe.status_code == 200, probe.text
            assert probe.json()["status"] == "degraded"
            assert probe.json()["checks"]["cache"].startswith("degraded: ") and "unreachable" in probe.text
            assert client.get("/users/user-001/recommendations").status_code == 200
        assert samples(client)["cliper_cache_up"] == 0
        redis_server.start()  # same port, a fresh server: pooled connections to the old one are dead
        time.sleep(0.3)  # past redis_retry_s
        probes = [client.get("/health/ready").json() for _ in range(3)]
        assert [probe["status"] for probe in probes] == ["ready"] * 3, probes  # no flap after recovery
        assert samples(client)["cliper_cache_up"] == 1


def test_a_redis_down_at_start_up_shows_at_once(make_client) -> None:
    nobody = RedisServer()  # a free port, never started
    with make_client(redis_url=nobody.url, redis_timeout_s=0.2) as client:
        assert samples(client)["cliper_cache_up"] == 0  # before any probe or request
        assert client.get("/health/ready").json()["status"] == "degraded"


def test_metrics_cover_every_stage(client: TestClient, factory: FactoryBundle) -> None:
    client.post("/items", json=item_body(prototype_item(2, "metered")))
    client.get("/users/user-001/recommendations")
    client.get("/users/user-001/recommendations")
    client.get("/users/stranger/recommendations")
    values = samples(client)
    for stage in ("decode", "prepare", "encode", "tower", "search", "cache", "store"):
        assert values[f'cliper_stage_seconds_count{{stage="{stage}"}}'] >= 1, stage
    assert values['cliper_cache_requests_total{result="hit"}'] == 1
    assert values['cliper_cache_requests_total{result="miss"}'] == 1
    assert values['cliper_recommendations_total{source="popularity"}'] == 1
    assert values["cliper_index_items"] == len(factory.items) + 1
    assert values["cliper_encode_batch_size_count"] == 2  # warm-up + one item


def test_openapi_documents_both_item_bodies(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/items"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    recommendations = spec["paths"]["/users/{user_id}/recommendations"]["get"]["responses"]["200"]
    assert recommendations["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Recommendations"}


def test_recommendations_match_their_documented_model(client: TestClient) -> None:
    """The endpoint serialises its body without validating it (hot path): this checks it."""
    for user in ("user-000", "nobody-yet"):  # the model's ranking and the popularity fallback
        body = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
        assert Recommendations.model_validate(body).model_dump(mode="json", exclude_none=True) == body
