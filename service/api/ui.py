"""The page at /ui: static HTML, CSS and JavaScript (service/ui/) that call this API from the browser.

No build step and nothing from another host: the files are served as they are, by the service.
`/ui` redirects to `/ui/`, so that the page's relative links (`app.js`, `style.css`) resolve
under it.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[1] / "ui"

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


router.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")
