"""Liveness (the process answers) and readiness (bundle verified, encoders warm, cache usable)."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health)
async def live() -> Health:
    return Health(status="alive")


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(request: Request) -> Health | JSONResponse:
    """200 when requests can be served as configured; 503 with the failing check otherwise."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse(Health(status="not ready", checks={"startup": "not finished"}).model_dump(), 503)
    problem = await services.cache.problem()
    checks = {
        "bundle": f"verified {services.bundle_version}" if services.settings.verify_bundle
        else f"loaded {services.bundle_version} (checksums not verified)",
        "encoders": f"warm on {services.encoder.providers[0]}",
        "cache": problem or f"{services.cache.kind} ok",
    }
    if problem:
        return JSONResponse(Health(status="not ready", checks=checks).model_dump(), 503)
    return Health(status="ready", checks=checks)
