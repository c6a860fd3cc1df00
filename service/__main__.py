"""`python -m service --bundle DIR [--host H] [--port P] [--workers N] ...`: serve with uvicorn.

Every setting of `service.config.Settings` is a flag here (kebab-case) and a `CLIPER_*`
environment variable; flags win. With `--workers N` uvicorn starts N processes, each building
the app from the environment, so the flags are handed over as `CLIPER_*` variables, and
Prometheus metrics are shared through a fresh `PROMETHEUS_MULTIPROC_DIR`.

The workers share one listening socket. By default the event loop (uvloop/libuv) of whichever
worker wakes first accepts every pending connection, so a burst of keep-alive connections can
land on one worker (32 of 32 in the serving benchmark); `UV_TCP_SINGLE_ACCEPT=1` makes each
worker accept one connection per wake-up, which spreads them (16/16 in most runs).
"""

import logging
import os
import sys
import tempfile
from pathlib import Path

import uvicorn
from pydantic import SecretStr

from service.app import create_app
from service.config import Settings


def as_environment(settings: Settings) -> dict[str, str]:
    """`CLIPER_*` variables that rebuild `settings` in another process."""
    environment = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        environment[f"CLIPER_{name.upper()}"] = str(value)
    return environment


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
        return
    os.environ.update(as_environment(settings))
    os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    with tempfile.TemporaryDirectory(prefix="cliper-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, host=settings.host,
                    port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
