"""Three replicas on their own ports over one PostgreSQL and one Redis, as on several hosts.

Each replica is a real `python -m service` process with its own FAISS index; they share nothing
but the database (the catalog of record) and the Redis cache, and the test reaches them over TCP
only. Items are ingested through all three at once while one replica is killed with SIGKILL and
restarted on its port.
"""

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from bundle_factory import FactoryBundle, make_item
from served import Served, served
from service_testing import item_body
from store_testing import Database

REDIS_URL = "redis://127.0.0.1:6379/0"
ITEMS = 60
WORKERS_PER_REPLICA = 2
KILL_AFTER_ACKS = 20
CANDIDATE_WITHIN_S = 1.0
WATCHER = "user-000"  # has seen 5 of the 240 bundle items: every other item is among its top 1000
ALL = 1000  # the largest k


@pytest.fixture
def store_backend() -> str:
    return "postgresql"


class Replicas:
    """Replica processes over one database; `up` holds the indexes of those serving."""

    def __init__(self, stack: ExitStack, bundle: Path, work: Path, store_url: str) -> None:
        self.stack, self.bundle, self.work = stack, bundle, work
        self.env = {"CLIPER_STORE_URL": store_url, "CLIPER_REDIS_URL": REDIS_URL}
        self.servers: list[Served] = []
        self.up: set[int] = set()

    def start(self, i: int) -> None:
        port = self.servers[i].port if i < len(self.servers) else None
        server = self.stack.enter_context(served(self.bundle, self.work / f"replica-{i}", env=self.env, port=port))
        if i < len(self.servers):
            self.servers[i] = server
        else:
            self.servers.append(server)
        self.up.add(i)

    def kill(self, i: int) -> None:
        self.up.discard(i)
        os.kill(self.servers[i].process.pid, signal.SIGKILL)
        self.servers[i].process.wait()


@pytest.fixture
def replicas(factory: FactoryBundle, database: Database, tmp_path: Path) -> Iterator[Replicas]:
    with ExitStack() as stack:
        cluster = Replicas(stack, factory.path, tmp_path, database.url)
        for i in range(3):
            cluster.start(i)
        yield cluster


def candidates(client: httpx.Client | None, base: str, user: str = WATCHER) -> list[str]:
    response = (client or httpx).get(f"{base}/users/{user}/recommendations", params={"k": ALL}, timeout=10)
    assert response.status_code == 200, response.text
    return [entry["item_id"] for entry in response.json()["items"]]


async def a_candidate_within(client: httpx.AsyncClient, cluster: Replicas, item_id: str) -> list[str]:
    """The replicas (of those up throughout) where `item_id` was not recommendable within the bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANDIDATE_WITHIN_S
    late = []
    for i in sorted(cluster.up):
        while True:
            try:
                response = await client.get(f"{cluster.servers[i].base}/users/{WATCHER}/recommendations",
                                            params={"k": ALL})
            except httpx.TransportError:
                if i not in cluster.up:  # killed while we asked
                    break
                raise
            if item_id in {entry["item_id"] for entry in response.json()["items"]}:
                break
            if loop.time() > deadline:
                late.append(f"replica-{i}")
                break
            await asyncio.sleep(0.01)
    return late


async def ingest_through_all(cluster: Replicas, bodies: list[dict], victim: int) -> tuple[set[str], list[str], int]:
    """Workers post to their replica (retrying with the same Idempotency-Key while it is down);
    after KILL_AFTER_ACKS acknowledgements `victim` is killed and restarted. Returns the
    acknowledged ids, the late candidacies and how many items were acknowledged while it was down."""
    queue = iter(bodies)
    acked: set[str] = set()
    late: list[str] = []
    kill = asyncio.Event()
    while_down: list[int] = []

    async def worker(i: int) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for body in queue:
                while True:
                    try:
                        response = await client.post(f"{cluster.servers[i].base}/items", json=body,
                                                     headers={"Idempotency-Key": body["item_id"]})
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)  # the replica is down: retry once it is back
                assert response.status_code == 201, response.text
                acked.add(body["item_id"])
                if len(acked) == KILL_AFTER_ACKS:
                    kill.set()
                late.extend(f"{body['item_id']} on {where}" for where in
                            await a_candidate_within(client, cluster, body["item_id"]))

    async def killer() -> None:
        await kill.wait()
        cluster.kill(victim)
        killed_at = len(acked)
        await asyncio.to_thread(cluster.start, victim)
        while_down.append(len(acked) - killed_at)

    tasks = [worker(i) for i in range(3) for _ in range(WORKERS_PER_REPLICA)]
    await asyncio.wait_for(asyncio.gather(killer(), *tasks), timeout=90)
    return acked, late, while_down[0]


def test_replicas_share_items_survive_a_kill_and_converge(replicas: Replicas, factory: FactoryBundle) -> None:
    rng = np.random.default_rng(15)
    bodies = [item_body(make_item(rng, n % 4, f"replicated-{n:03d}")) for n in range(ITEMS)]
    acked, late, while_down = asyncio.run(ingest_through_all(replicas, bodies, victim=2))

    assert acked == {body["item_id"] for body in bodies}, "every item is acknowledged once its replica is back"
    assert while_down > 0, "the other replicas kept acknowledging while one was down"
    assert not late, f"acknowledged items not recommendable within {CANDIDATE_WITHIN_S} s: {late}"
    with httpx.Client() as client:
        for i, server in enumerate(replicas.servers):
            missing = acked - set(candidates(client, server.base))
            assert not missing, f"replica-{i} lacks {len(missing)} acknowledged items: {sorted(missing)[:5]}"
            assert server.process.poll() is None


def test_an_interaction_through_one_replica_is_excluded_by_another(replicas: Replicas) -> None:
    with httpx.Client() as client:
        for writer, reader in ((0, 1), (1, 2), (2, 0)):
            user = f"user-00{writer + 1}"
            top = candidates(client, replicas.servers[reader].base, user)[0]
            response = client.post(f"{replicas.servers[writer].base}/users/{user}/interactions",
                                   json={"item_ids": [top]})
            assert response.status_code == 201, response.text
            after = candidates(client, replicas.servers[reader].base, user)
            assert top not in after, f"replica-{reader} still recommends {top} to {user} after replica-{writer} recorded it"
            assert len(after) > 200, "the user still gets recommendations"
