"""The `python -m offline` entry point: one thin typer command per stage.

Each command lives in `offline/commands/<stage>.py` and imports its heavy modules (torch,
open_clip) inside the function, so `--help` stays fast.
"""

import logging

import typer

from offline.commands import bench, export, features, foldin, pipeline, refit, scale, synth, train, train_clip, verify

app = typer.Typer(
    help="CLIPER offline job: synthetic data, CLIP training, features, recommender training, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def log_to_stderr(
    log_level: str = typer.Option("INFO", "--log-level", help="messages shown on stderr from this level on: DEBUG, "
                                  "INFO (progress of long steps, e.g. FAISS index builds and their recall), WARNING"),
) -> None:
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"{log_level!r} is not a logging level; use DEBUG, INFO or WARNING",
                                 param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for module in (synth, scale, train_clip, features, train, refit, bench, foldin, export, verify, pipeline):
    app.command(module.NAME)(module.command)
