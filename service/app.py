"""App factory and lifespan: nothing happens at import; start-up builds every part onto app.state.

Start-up order: read and verify the bundle, load and warm up the ONNX encoders, open the
store, restore the catalog and the users from the newest snapshot (or build them from the bundle;
`service.snapshotter`), re-encode items written by other models (once for every replica:
`service.reencode`), apply the store's logs after the snapshot's position, connect the cache.
The app is ready (see /health/ready) once all of that is done; a cache that does not answer
makes it `degraded`, not unready. Each worker process (`--workers N`) runs
all of this for itself.
"""

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cliper.bundle import read_bundle
from cliper.foldin import DEFAULT_FOLD_IN_RULE
from service.api import bundle, health, items, metrics, search, ui, users
from service.api.responses import add_error_handlers
from service.cache import UserVectorCache, make_cache
from service.config import Settings
from service.cpus import onnx_intra_op_threads, usable_cpus
from service.encoders import ItemEncoder
from service.ingest import ItemService
from service.interactions import InteractionRecorder
from service.metrics import Metrics
from service.middleware import BodyLimitMiddleware
from service.follower import StoreFollower
from service.recommend import RecommendationService
from service.search import CatalogSearch
from service.snapshot import SnapshotDir, SnapshotKey
from service.snapshotter import Snapshotter, starting_state
from service.state import Services
from service.store import open_store

log = logging.getLogger(__name__)


def build_services(settings: Settings, cache: UserVectorCache, metrics: Metrics) -> Services:
    """The blocking part of start-up (run in a thread): bundle, encoders, store replay."""
    started = time.perf_counter()
    bundle = read_bundle(settings.bundle, verify=settings.verify_bundle)
    version = bundle.manifest.bundle_version
    log.info("bundle %s: version %s, %d items, %d users", bundle.root, version,
             len(bundle.item_ids), len(bundle.user_ids))
    cpus = usable_cpus()
    threads = onnx_intra_op_threads(settings.intra_op_threads, settings.workers, cpus)
    log.info("%d usable CPUs, %d worker(s): %d ONNX Runtime threads per session", cpus, settings.workers, threads)
    encoder = ItemEncoder(bundle, metrics, settings.providers, threads, settings.max_image_pixels,
                          settings.max_image_aspect_ratio, settings.precision)
    encoder.warm_up()
    store_url = None if settings.store_url is None else settings.store_url.get_secret_value()
    store = open_store(store_url, settings.resolved_data_dir, settings.idempotency_ttl_s)
    snapshots = SnapshotDir(settings.resolved_snapshot_dir, settings.snapshot_keep) if settings.snapshot_keep else None
    key = SnapshotKey(version, store.identity(), DEFAULT_FOLD_IN_RULE)
    start = starting_state(bundle, settings.search_threads, snapshots, key)
    catalog, users, popularity = start.catalog, start.users, start.popularity
    index = catalog.items
    index.search(bundle.item_vectors[:1], 10)  # warm-up
    item_service = ItemService(encoder, catalog, store, metrics, version, bundle.item_ids,
                               settings.max_batch_size, settings.max_batch_wait_ms / 1000, bundle.thumbnails)
    follower = StoreFollower(store, catalog, users, popularity, metrics, version, start.position,
                             on_other_bundle=item_service.reencoder.request)
    item_service.reencoder.run()  # items other models wrote get this one's vectors (`service.reencode`)
    replay_started = time.perf_counter()
    follower.catch_up()
    log.info("applied the store's logs after item seq %d, interaction seq %d in %.1fs; index holds %d items",
             start.position.item_seq, start.position.interaction_seq, time.perf_counter() - replay_started,
             index.size)
    snapshotter = None if snapshots is None else Snapshotter(
        snapshots, key, follower, settings.snapshot_every_changes, settings.snapshot_every_s)
    # a search thread pays off only where it can overlap the event loop: a GPU or a spare core
    offload_search = index.on_gpu or settings.workers < cpus
    recommendations = RecommendationService(users, catalog, bundle.manifest.fusion, popularity, cache,
                                            store.identity(), metrics, version, offload_search)
    interactions = InteractionRecorder(users, index, cache, store, metrics, version)
    log.info("started in %.1fs (providers %s, cache %s)", time.perf_counter() - started,
             encoder.providers, cache.kind)
    return Services(settings, metrics, bundle, encoder, catalog, item_service, recommendations,
                    CatalogSearch(catalog, encoder, metrics, offload_search), interactions, cache, store, follower,
                    snapshotter)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics = Metrics()
    cache = make_cache(settings.redis_url, settings.cache_ttl_s, settings.cache_max_entries,
                       settings.redis_timeout_s, settings.redis_retry_s, metrics)
    try:
        services = await asyncio.to_thread(build_services, settings, cache, metrics)
    except BaseException:
        await cache.close()
        raise
    # Start-up leaves ~100k long-lived objects (bundle maps, ONNX, FastAPI); a full garbage
    # collection walks them all (~30 ms on a 2-core machine), a pause that lands in a request's
    # latency. Freezing them keeps them out of every later collection.
    gc.collect()
    gc.freeze()
    await cache.problem()  # a Redis down at start-up is logged and shows in cliper_cache_up at once
    services.items.start()
    services.recommendations.searcher.start()
    services.follower.follow(asyncio.get_running_loop())
    if services.snapshotter is not None:
        services.snapshotter.start(asyncio.get_running_loop())
    app.state.services = services
    try:
        yield
    finally:
        gc.unfreeze()
        await services.items.stop()
        await services.recommendations.searcher.stop()
        if services.snapshotter is not None:
            await services.snapshotter.stop()
        await cache.close()
        services.store.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app; `settings` default to the `CLIPER_*` environment."""
    settings = settings if settings is not None else Settings()  # type: ignore[call-arg]
    app = FastAPI(
        title="CLIPER recommendation service",
        description="Multi-view CLIP item vectors, inner-product recommendations, from a model bundle.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    add_error_handlers(app)
    for module in (items, users, search, bundle, health, metrics, ui):
        app.include_router(module.router)
    return app
