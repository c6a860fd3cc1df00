"""The `python -m offline` entry point: one thin typer command per stage.

Each command lives in `offline/commands/<stage>.py` and imports its heavy modules (torch,
open_clip) inside the function, so `--help` stays fast.
"""

import typer

from offline.commands import bench, export, features, foldin, pipeline, refit, scale, synth, train, train_clip, verify

app = typer.Typer(
    help="CLIPER offline job: synthetic data, CLIP training, features, recommender training, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for module in (synth, scale, train_clip, features, train, refit, bench, foldin, export, verify, pipeline):
    app.command(module.NAME)(module.command)
