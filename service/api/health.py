"""Liveness (the process answers) and readiness (bundle verified, encoders warm: requests can be served).

The user-vector cache is not a condition of readiness: without it (Redis down) every request is
still answered, only with the vector computed in process, so a shared-cache outage must not take
every replica out of a load balancer's rotation. Readiness then says `degraded` (200) and names
the cache's problem; `cliper_cache_up` is 0 in /metrics.
"""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.responses import OVERLOADED, errors
from service.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health, responses=errors())
async def live() -> Health:
    return Health(status="alive")


@router.get("/ready", response_model=Health, responses={
    **errors(), 503: {**OVERLOADED, "model": Health, "description": "start-up not finished; or the worker is overloaded"
                      " (uvicorn's plain-text answer)"}})
async def ready(request: Request) -> Health | JSONResponse:
    """200 once start-up is done (`degraded` while the cache is unusable); 503 before."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse(Health(status="not ready", checks={"startup": "not finished"}).model_dump(), 503)
    problem = await services.cache.problem()
    checks = {
        "bundle": f"verified {services.bundle_version}" if services.settings.verify_bundle
        else f"loaded {services.bundle_version} (checksums not verified)",
        "encoders": f"warm on {services.encoder.providers[0]}",
        "index": "FAISS on GPU" if services.catalog.items.on_gpu else "FAISS on CPU",
        "cache": f"degraded: {problem}; serving without the cache" if problem else f"{services.cache.kind} ok",
    }
    return Health(status="degraded" if problem else "ready", checks=checks)
