"""Fetching an item's `image_url`, only from allow-listed URL prefixes (no SSRF by default).

URLs are parsed and normalised by httpx, the client that fetches them, so what is checked is
what is requested: scheme and host compared case-insensitively (IDNA-encoded), default ports
made explicit, "." and ".." segments resolved. A URL is allowed when its scheme, host and port
equal an allow-list entry's and its path starts with the entry's whole path segments
(`https://cdn/img` admits `https://cdn/img/a.png`, not `https://cdn/img-private/a.png`).
Refused outright: user info (`user@host`), and path segments a server might decode into
something else: percent-encoded "." or "..", encoded or literal slashes and backslashes within
a segment, double encoding, control characters. Redirects are followed (at most
`MAX_REDIRECTS`) only to URLs that pass the same check; the body is capped.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

from service.errors import BadInput, PayloadTooLarge

MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlPrefix:
    """A normalised URL: scheme, host, port and decoded path segments."""

    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, url: str | httpx.URL) -> "UrlPrefix":
        """Normalise `url`, or raise `ValueError` saying why it cannot be allow-listed."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"it is not a valid URL ({exc})") from exc
        if parsed.scheme not in DEFAULT_PORTS:
            raise ValueError("it must be an http or https URL")
        if parsed.userinfo:
            raise ValueError("it must not contain user info (user@host)")
        if not parsed.raw_host:
            raise ValueError("it has no host")
        path = parsed.raw_path.decode("ascii").partition("?")[0]
        segments = tuple(_segment(raw) for raw in path.split("/")[1:])
        port = parsed.port or DEFAULT_PORTS[parsed.scheme]
        return cls(parsed.scheme, parsed.raw_host.decode("ascii").lower(), port, segments)

    def admits(self, other: "UrlPrefix") -> bool:
        """Same origin, and `other`'s path starts with this prefix's whole segments."""
        prefix = self.segments[:-1] if self.segments[-1:] == ("",) else self.segments  # "/img/" = "/img"
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and (
            other.segments[: len(prefix)] == prefix
        )


def check_prefix(entry: str) -> str:
    """An allow-list entry as given, or `ValueError` saying why it cannot be one."""
    if "?" in entry or "#" in entry:
        raise ValueError(f"image_url allow-list entry {entry!r}: a prefix has no query or fragment")
    try:
        UrlPrefix.parse(entry)
    except ValueError as exc:
        raise ValueError(f"image_url allow-list entry {entry!r}: {exc}") from exc
    return entry


def refusal(url: str | httpx.URL, allow_list: Sequence[str]) -> str | None:
    """Why `url` may not be fetched, or None when an allow-list entry admits it."""
    try:
        target = UrlPrefix.parse(url)
    except ValueError as exc:
        return str(exc)
    if any(UrlPrefix.parse(entry).admits(target) for entry in allow_list):
        return None
    return f"it is not under an allowed prefix {list(allow_list)}"


def check_url(url: str, allow_list: Sequence[str]) -> httpx.URL:
    """The URL to request, or `BadInput` saying why `url` is refused."""
    reason = refusal(url, allow_list)
    if reason is not None:
        raise BadInput(f"image_url {url!r} is refused: {reason}")
    return httpx.URL(url)


async def fetch_image(url: str, allow_list: Sequence[str], max_bytes: int, timeout_s: float) -> bytes:
    """The bytes at an allow-listed URL, or a 4xx `ServiceError` that says why not."""
    if not allow_list:
        raise BadInput("image_url is disabled on this service; send the image as image_base64 or a file upload")
    target = check_url(url, allow_list)
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            request = client.build_request("GET", target)
            for _ in range(MAX_REDIRECTS + 1):
                response = await client.send(request, stream=True)
                try:
                    if response.next_request is None:
                        return await _read_image(response, max_bytes)
                finally:
                    await response.aclose()
                request = response.next_request  # httpx resolves Location against the URL it answered
                reason = refusal(request.url, allow_list)
                if reason is not None:
                    raise BadInput(f"image_url redirected to {str(request.url)!r}, which is refused: {reason}")
    except httpx.HTTPError as exc:
        raise BadInput(f"image_url could not be fetched: {type(exc).__name__}: {exc}") from exc
    raise BadInput(f"image_url {url!r} took more than {MAX_REDIRECTS} redirects (the last to {str(request.url)!r})")


async def _read_image(response: httpx.Response, max_bytes: int) -> bytes:
    if response.status_code != 200:
        raise BadInput(f"image_url answered HTTP {response.status_code}; it must answer 200 with the image")
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data.extend(chunk)
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"the image at image_url is over {max_bytes} bytes")
    return bytes(data)


def _segment(raw: str) -> str:
    """A path segment decoded, or `ValueError` when a server might read it as another path."""
    decoded = unquote(raw)
    if decoded in (".", ".."):
        raise ValueError(f"its path has a '.' or '..' segment ({raw!r})")
    if any(char in decoded for char in "/\\%"):
        raise ValueError(f"its path segment {raw!r} holds an encoded or literal slash, backslash or '%'")
    if any(ord(char) < 32 or ord(char) == 127 for char in decoded):
        raise ValueError(f"its path segment {raw!r} holds a control character")
    return decoded
