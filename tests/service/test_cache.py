"""User-vector cache: real Redis (127.0.0.1:6379), a Redis killed mid-test, and the embedded LRU."""

import asyncio
import shutil
import time

import numpy as np
import pytest
import redis
from service_testing import RedisServer

from cliper.bundle import read_bundle
from service.cache import LruCache, cache_key

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def recommend(client, user: str) -> dict:
    response = client.get(f"/users/{user}/recommendations", params={"k": 5})
    assert response.status_code == 200, response.text
    return response.json()


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_hits_misses_ttl_and_keys_in_redis(make_client, factory) -> None:
    shared = redis.Redis(host="127.0.0.1", port=6379)
    try:
        shared.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379 (run scripts/ensure_redis.sh)")
    user = "user-003"
    with make_client(redis_url="redis://127.0.0.1:6379/0", cache_ttl_s=120) as client:
        store_id = client.app.state.services.store.identity()  # a fresh data dir: a new store
        key = cache_key(factory.manifest.bundle_version, store_id, user, 0)
        assert client.get("/health/ready").json()["checks"]["cache"] == "redis ok"
        first, second = recommend(client, user), recommend(client, user)
        assert (first["from_cache"], second["from_cache"]) == (False, True)
        assert first["items"] == second["items"]
        assert 0 < shared.ttl(key) <= 120
        np.testing.assert_array_equal(np.frombuffer(shared.get(key), dtype=np.float32).shape, (16,))
        assert metric(client, 'cliper_cache_requests_total{result="hit"}') >= 1
        item = first["items"][0]["item_id"]
        assert client.post(f"/users/{user}/interactions", json={"item_ids": [item]}).status_code == 201
        assert shared.get(key) is None  # invalidated
        assert recommend(client, user)["from_cache"] is False
        assert recommend(client, user)["from_cache"] is True
    shared.delete(key, cache_key(factory.manifest.bundle_version, store_id, user, 1))


def test_service_keeps_answering_while_redis_is_down(make_client, redis_server: RedisServer) -> None:
    user = "user-002"
    with make_client(redis_url=redis_server.url, redis_retry_s=0.2, redis_timeout_s=0.2) as client:
        assert recommend(client, user)["from_cache"] is False
        assert recommend(client, user)["from_cache"] is True
        redis_server.stop()
        down = [recommend(client, user) for _ in range(3)]
        assert [body["from_cache"] for body in down] == [False] * 3
        assert all(body["items"] == down[0]["items"] for body in down)
        assert metric(client, "cliper_redis_errors_total") >= 1
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and "unreachable" in ready.json()["checks"]["cache"]
        redis_server.start()  # same port, empty
        time.sleep(0.3)  # past redis_retry_s
        assert recommend(client, user)["from_cache"] is False
        assert recommend(client, user)["from_cache"] is True
        assert client.get("/health/ready").status_code == 200


def test_a_wiped_data_dir_is_not_served_the_old_vectors(make_client, make_settings, factory,
                                                         redis_server: RedisServer) -> None:
    """Keys carry the user's interaction count; after the data dir is wiped (Redis kept) the count
    starts again at 0, so without the store's identity in the key the old life's vector is read."""
    user = "user-005"
    bundle = read_bundle(factory.path)
    row = bundle.user_ids.index(user)
    n0 = len(factory.seen[user])
    before, after = (next(item for item in factory.items if item.cluster == c) for c in (0, 2))
    with make_client(redis_url=redis_server.url) as client:
        assert client.post(f"/users/{user}/interactions", json={"item_ids": [before.item_id]}).status_code == 201
        assert [recommend(client, user)["from_cache"] for _ in range(2)] == [False, True]
    shutil.rmtree(make_settings().resolved_data_dir)
    with make_client(redis_url=redis_server.url) as client:
        assert client.post(f"/users/{user}/interactions", json={"item_ids": [after.item_id]}).status_code == 201
        body = recommend(client, user)
        assert body["from_cache"] is False, "the vector cached before the wipe was served"
        item_vector = np.array(client.get(f"/items/{after.item_id}", params={"include_vector": True}).json()["vector"])
        expected = (n0 * bundle.user_vectors[row] + item_vector) / (n0 + 1)
        top = body["items"][0]
        top_vector = client.get(f"/items/{top['item_id']}", params={"include_vector": True}).json()["vector"]
        np.testing.assert_allclose(top["score"], np.dot(top_vector, expected), rtol=1e-4)


def test_embedded_lru_expires_and_evicts() -> None:
    async def main() -> None:
        cache = LruCache(max_entries=2, ttl_s=0.1)
        vector = np.arange(3, dtype=np.float32)
        await cache.set("a", vector)
        await cache.set("b", vector)
        assert await cache.get("a") is not None  # a is now most recent
        await cache.set("c", vector)
        assert await cache.get("b") is None and await cache.get("a") is not None
        await asyncio.sleep(0.15)
        assert await cache.get("a") is None and await cache.problem() is None

    asyncio.run(main())


def test_embedded_cache_by_default(client) -> None:
    assert client.get("/health/ready").json()["checks"]["cache"] == "embedded ok"
    assert (recommend(client, "user-004")["from_cache"], recommend(client, "user-004")["from_cache"]) == (False, True)
