"""Typed dependencies of the routers (tests may override them with `app.dependency_overrides`)."""

import hmac
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from service.errors import Unauthorized
from service.popularity import MAX_K
from service.selection import Selection
from service.state import Services


async def get_services(request: Request) -> Services:
    """The running services, with this worker caught up on what every worker wrote (the store's
    logs) before the handler runs: one step per request, as FastAPI computes a dependency once
    per request however many others use it. A write needs no step after it: its reply comes from
    its transaction, and the next request applies it here like any other worker's change. Async
    on purpose: FastAPI runs a sync dependency in its thread pool (a costly hop), and the
    follower must run on the event loop's thread."""
    services: Services = request.app.state.services
    services.follower.catch_up()
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def require_api_key(
    services: ServicesDep, x_api_key: Annotated[str | None, Header(description="the service's API key")] = None
) -> None:
    """Write endpoints need `X-API-Key` when the service has an API key."""
    expected = services.settings.api_key
    if expected is None:
        return
    if x_api_key is None:
        raise Unauthorized("this endpoint needs the API key in the X-API-Key header")
    if not hmac.compare_digest(x_api_key.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("the X-API-Key header does not match the service's API key")


ApiKey = Depends(require_api_key)


async def get_selection(
    services: ServicesDep,
    filters: Annotated[list[str], Query(alias="filter", description=(
        "field:value, e.g. categories:Shoes: the item's field equals the value (case-insensitive), or, "
        "for a list field such as categories, one of its entries does; repeat to AND several"))] = [],  # noqa: B006
    exclude: Annotated[list[str], Query(description="item ids to leave out, comma-separated; may repeat")] = [],  # noqa: B006
) -> Selection:
    """The `filter` and `exclude` parameters of the read endpoints; a 422 saying what is wrong."""
    return Selection.parse(filters, exclude, services.columns)


SelectionDep = Annotated[Selection, Depends(get_selection)]
HowMany = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
