"""`python -m service --bundle DIR [--host H] [--port P] [--redis-url URL] ...`: serve with uvicorn.

Every setting of `service.config.Settings` is a flag here (kebab-case) and a `CLIPER_*`
environment variable; flags win.
"""

import logging
import sys

import uvicorn

from service.app import create_app
from service.config import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)  # type: ignore[call-arg]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
