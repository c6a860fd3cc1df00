"""The parts of a running service, built by the lifespan and kept on `app.state.services`."""

from dataclasses import dataclass
from functools import cached_property

from cliper.bundle import LoadedBundle
from service.cache import UserVectorCache
from service.catalog import ItemCatalog
from service.config import Settings
from service.encoders import ItemEncoder
from service.follower import StoreFollower
from service.ingest import ItemService
from service.interactions import InteractionRecorder
from service.metrics import Metrics
from service.recommend import RecommendationService
from service.search import CatalogSearch
from service.snapshotter import Snapshotter
from service.store import Store


@dataclass
class Services:
    """Everything a request handler may use; lives on `app.state.services`."""

    settings: Settings
    metrics: Metrics
    bundle: LoadedBundle
    encoder: ItemEncoder
    catalog: ItemCatalog
    items: ItemService
    recommendations: RecommendationService
    search: CatalogSearch
    interactions: InteractionRecorder
    cache: UserVectorCache
    store: Store
    follower: StoreFollower
    snapshotter: Snapshotter | None

    @property
    def bundle_version(self) -> str:
        return self.bundle.manifest.bundle_version

    @cached_property
    def columns(self) -> list[str]:
        """The bundle's text fields (the views' columns)."""
        return self.bundle.manifest.views.columns
