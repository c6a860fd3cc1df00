"""GET /metrics in the Prometheus text format."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import ServicesDep
from service.api.responses import errors

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses=errors())
async def metrics(services: ServicesDep) -> Response:
    """Per-stage latency, cache hits and misses, Redis errors, batch sizes, index size."""
    return Response(generate_latest(services.metrics.exposition_registry()), media_type=CONTENT_TYPE_LATEST)
