"""`python -m offline verify BUNDLE`: checksums, then parity of the bundle with its run."""

from pathlib import Path
from typing import Annotated

import typer

NAME = "verify"


def command(
    bundle: Annotated[Path, typer.Argument(help="bundle folder written by `python -m offline export`")],
    run: Annotated[
        Path | None, typer.Option(help="the run folder it was exported from [default: the one the bundle records]")
    ] = None,
    items: Annotated[int, typer.Option(help="sample items for the parity checks")] = 16,
    users: Annotated[int, typer.Option(help="sample users for the top-50 check")] = 32,
    tolerance: Annotated[float, typer.Option(help="max abs difference allowed (fp32)")] = 1e-4,
) -> None:
    """Check files, versions and ONNX/torch parity; exit 1 with the reason on any mismatch."""
    from offline.export.verify import report, verify_bundle

    checks = verify_bundle(bundle, run, items, users, tolerance)
    typer.echo(report(checks))
    failed = [check for check in checks if not check.passed]
    if failed:
        reasons = "\n".join(f"- {check.name}: {check.detail}" for check in failed)
        typer.echo(f"verify: {bundle} FAILED {len(failed)} of {len(checks)} checks:\n{reasons}", err=True)
        raise typer.Exit(1)
    typer.echo(f"verify: {bundle} passed all {len(checks)} checks")
