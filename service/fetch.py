"""Fetching an item's `image_url`, only from allow-listed URL prefixes (no SSRF by default).

A URL is allowed when its scheme and host[:port] equal an allow-list entry's and its path
starts with the entry's path (no ".." segments); redirects are not followed and the body is capped.
"""

from urllib.parse import urlsplit

import httpx

from service.errors import BadInput, PayloadTooLarge


def url_allowed(url: str, allow_list: list[str]) -> bool:
    parts = urlsplit(url)
    if ".." in parts.path.split("/"):
        return False
    for entry in allow_list:
        allowed = urlsplit(entry)
        if (parts.scheme, parts.netloc) == (allowed.scheme, allowed.netloc) and parts.path.startswith(
            allowed.path or "/"
        ):
            return True
    return False


async def fetch_image(url: str, allow_list: list[str], max_bytes: int, timeout_s: float) -> bytes:
    """The bytes at an allow-listed URL, or a 4xx `ServiceError` that says why not."""
    if not allow_list:
        raise BadInput("image_url is disabled on this service; send the image as image_base64 or a file upload")
    if not url_allowed(url, allow_list):
        raise BadInput(f"image_url {url!r} is not under an allowed prefix {allow_list}")
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise BadInput(f"image_url answered HTTP {response.status_code}; it must answer 200 with the image")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data.extend(chunk)
                    if len(data) > max_bytes:
                        raise PayloadTooLarge(f"the image at image_url is over {max_bytes} bytes")
    except httpx.HTTPError as exc:
        raise BadInput(f"image_url could not be fetched: {type(exc).__name__}: {exc}") from exc
    return bytes(data)
