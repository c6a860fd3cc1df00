"""GET /bundle: what the served bundle holds and takes (views, text fields, list fields)."""

from fastapi import APIRouter

from service.api.deps import ServicesDep
from service.api.responses import errors
from service.api.schemas import BundleInfo

router = APIRouter(tags=["bundle"])


@router.get("/bundle", response_model=BundleInfo, responses=errors())
async def bundle_info(services: ServicesDep) -> BundleInfo:
    """The bundle's version, its views and the text fields items have, which filters take."""
    manifest = services.bundle.manifest
    return BundleInfo(
        bundle_version=manifest.bundle_version, views=manifest.views.view_names, fields=manifest.views.columns,
        list_fields=manifest.views.list_separators, items=services.catalog.items.size,
        thumbnails=services.bundle.thumbnails is not None, fusion=manifest.fusion.mode)
