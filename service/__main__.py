"""`python -m service --bundle DIR [--host H] [--port P] [--workers N] ...`: serve with uvicorn.

Every setting of `service.config.Settings` is a flag here (kebab-case) and a `CLIPER_*`
environment variable; flags win. With `--workers N` uvicorn starts N processes, each building
the app from the environment, so the flags are handed over as `CLIPER_*` variables, and
Prometheus metrics are shared through a fresh `PROMETHEUS_MULTIPROC_DIR`.

On Linux each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
evenly over the workers (`service.launcher`); elsewhere they share uvicorn's one socket.
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
from service.launcher import reuse_port_available, run_workers, server_options


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
        uvicorn.run(create_app(settings), **server_options(settings))
        return
    os.environ.update(as_environment(settings))
    with tempfile.TemporaryDirectory(prefix="cliper-metrics-") as metrics_dir:
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
        options = {"factory": True, "workers": settings.workers, **server_options(settings)}
        if reuse_port_available():
            run_workers(uvicorn.Config("service.app:create_app", **options))
        else:
            uvicorn.run("service.app:create_app", **options)


if __name__ == "__main__":
    main()
