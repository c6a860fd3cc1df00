"""Training cost at Amazon scale (issue 17): seconds per epoch, peak memory and evaluation time
of FREEDOM, VBPR and LightGCN on the scale generator's Amazon-Clothing shape (1x: 39,387 users,
23,033 items, 278,677 interactions) and 10x.

For each factor the scale world (`offline/data/scale.py`) is written once into WORK/x<factor>
(kept and reused while its settings match). Each (model, factor) then runs in a fresh process:

  1. load the catalog and features and split them as `python -m offline train` does by default
     (MMRec's random split: 5-core, 20% cold items, 80/10/10 per user);
  2. build the model (`build s`, `build peak`: FREEDOM builds its content kNN graphs here);
  3. `--epochs` epochs as `fit` runs them (`epoch_batches`, `train_batches`), each followed by
     the validation `fit` runs (`Evaluator.evaluate_valid` of `warm_vectors`): full ranking of
     the warm items for every user with a validation item, in bounded batches.

Peak RSS is the process's VmHWM, reset after loading (`loaded GB`: the split and features stay
resident and count) and again after building. Both loops are linear in what they go through, so
long ones are timed on a part and scaled (marked `*`): an epoch of more than `--max-batches`
batches is its setup (pruning, negative sampling) plus its first `--max-batches` batches' time
scaled to all of them; the validation, the vectors' time plus the ranking of its first
`--max-eval-users` users scaled to all of them. FREEDOM's content kNN graphs are FAISS tables
(`offline/models/knn.py`: exact up to 50,000 warm items, the IVF self-join above).

A multi-modal backbone then fits its cold map as training ends (`fit_cold_map`: the ridge
strength by cross-validation over the warm items, the score-spread scale), timed whole
(`cold map s`, its own peak `cold map peak GB`).

With `--items N` (repeatable) a world has N items and Amazon-Clothing's users and interactions
per item (10^6 items: 1,710,025 users, 12,099,032 interactions), written into WORK/n<N>.

With `--export`, each multi-modal row then goes through the product's export, as a shop's
nightly job would: the trained model (the timed batches only: the export's cost does not depend
on how well it is trained) is written as a run folder (split, checkpoint, metrics, config), and
`python -m offline export` (HNSW32 item and CLIP indexes, no thumbnails: the world has no images)
and `python -m offline verify` run on it as subprocesses, timed with their peak RSS, with the
FAISS build seconds read from the export's log and the bundle's size. The scale features are
synthetic vectors, not a CLIP's output, so the run names a random-init `cliper-minilm` (the
stand-in CLIP's architecture, embed_dim 256 as the features) for the encoders the bundle ships.
The world has no images, so verify skips its checks that encode an item's raw content and
compare with the features (`preprocessing`, `raw content`, `item encodings`); the rest must pass.

    .venv/bin/python scripts/bench_scale.py [--factors 1 --factors 10] [--items 1000000] [--models freedom ...]
        [--epochs 2] [--max-batches 100] [--max-eval-users 50000] [--threads 1] [--work build/scale]
        [--scale-config SMALL.yaml] [--export] [--json FILE]
"""

import gc
import json
import math
import multiprocessing
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from offline.config import load_config  # noqa: E402
from offline.data.scale import FEATURES_DIR, ScaleConfig, generate_scale  # noqa: E402
from offline.models.features import ITEMS_FILE  # noqa: E402

DEFAULT_MODELS = ["freedom", "vbpr", "lightgcn"]
INDEX_PROGRESS = re.compile(r"(\d+) of (\d+) vectors added in (\d+)s")  # cliper.bundle.build_index's log
VERIFY_ROW = re.compile(r"^\| (.+?) \| (ok|FAILED) \|", re.MULTILINE)  # offline.export.verify.report's rows
GB = 2**30
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def scale_world(work: Path, name: str, config: Path | None, **counts: int) -> Path:
    """WORK/<name>, written unless a world of the same settings is there."""
    cfg = load_config(ScaleConfig, config, **counts)
    folder = work / name
    meta = folder / FEATURES_DIR / ITEMS_FILE
    if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("config") == cfg.model_dump():
        return folder
    print(f"writing the {name} world into {folder} ...", flush=True)
    print(generate_scale(folder, cfg), flush=True)
    return folder


def amazon_shape(items: int) -> dict[str, int]:
    """Users and interactions for `items` items in Amazon-Clothing's proportions."""
    base = ScaleConfig()
    return {"items": items, "users": round(base.users * items / base.items),
            "interactions": round(base.interactions * items / base.items)}


def measure(
    folder: Path, name: str, epochs: int, max_batches: int, max_eval_users: int, threads: int, run_dir: Path | None
) -> dict[str, Any]:
    """Build, train and validate one backbone on one world (run in a fresh process); with
    `run_dir`, write the trained model there as a run folder."""
    import torch

    from offline.data.catalog import load_catalog
    from offline.data.split import split_catalog
    from offline.models import InteractionGraph, build_model
    from offline.models.content import ContentRecommender
    from offline.ranking import UserItems, evaluate_ranking
    from offline.train.evaluate import Evaluator, warm_vectors
    from offline.train.rss import peak_rss_bytes, reset_peak_rss
    from offline.train.run import RunConfig, load_content
    from offline.train.trainer import NegativeSampler, adam, epoch_batches, seed_everything, select_device, train_batches

    cfg = RunConfig(data=folder, features=folder / FEATURES_DIR, model=name, threads=threads)
    spec = cfg.model_spec()
    seed_everything(cfg.seed)
    device = select_device("cpu", threads)
    split = split_catalog(load_catalog(folder), cfg.split)
    content = load_content(cfg.features, split) if spec.model_class().multimodal else None
    graph = InteractionGraph.from_split(split)
    evaluator = Evaluator(split, batch_size=cfg.eval_batch_size)
    valid_users = evaluator.valid.users()
    timed_users = valid_users[:max_eval_users]  # the validation of `evaluate_valid`, for these users
    timed = UserItems(split.valid[np.isin(split.valid[:, 0], timed_users)], split.n_users)
    warm = torch.from_numpy(~evaluator.cold)
    gc.collect()
    reset_peak_rss()
    loaded = peak_rss_bytes()
    started = time.perf_counter()
    model = build_model(spec, graph, content).to(device)
    build_seconds = time.perf_counter() - started
    build_peak = peak_rss_bytes()
    optimizer = adam(model)
    sampler = NegativeSampler(graph, np.random.default_rng(cfg.seed))
    n_batches = math.ceil(len(graph.edges) / cfg.batch_size)
    measured = min(n_batches, max_batches)
    epoch_seconds, eval_seconds, recalls = [], [], []
    reset_peak_rss()
    for _ in range(epochs):
        started = time.perf_counter()
        batches = epoch_batches(model, graph.edges, sampler, device)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        train_batches(model, optimizer, batches, cfg.batch_size, measured)
        epoch_seconds.append(setup + (time.perf_counter() - started) * n_batches / measured)
        started = time.perf_counter()
        vectors = warm_vectors(model)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        valid = evaluate_ranking(*vectors, timed, evaluator.train, warm, batch_size=cfg.eval_batch_size)
        eval_seconds.append(setup + (time.perf_counter() - started) * len(valid_users) / len(timed_users))
        recalls.append(valid["recall@20"])
    epochs_peak = peak_rss_bytes()
    cold_map_seconds = cold_map_peak = None
    if isinstance(model, ContentRecommender):
        reset_peak_rss()
        started = time.perf_counter()
        model.fit_cold_map()
        cold_map_seconds, cold_map_peak = time.perf_counter() - started, peak_rss_bytes() / GB
        if run_dir is not None:
            write_run(run_dir, cfg, split, model, epochs, recalls[-1])
    return {
        "model": name,
        "users": split.n_users,
        "items": split.n_items,
        "interactions": sum(len(part) for part in (split.train, split.valid, split.test, split.cold_test)),
        "train_pairs": len(graph.edges),
        "valid_users": len(valid_users),
        "valid_users_timed": len(timed_users),
        "batches": n_batches,
        "batches_measured": measured,
        "loaded_gb": loaded / GB,
        "build_seconds": build_seconds,
        "build_peak_gb": build_peak / GB,
        "epoch_seconds": statistics.mean(epoch_seconds),
        "eval_seconds": statistics.mean(eval_seconds),
        "peak_gb": epochs_peak / GB,
        "cold_map_seconds": cold_map_seconds,
        "cold_map_peak_gb": cold_map_peak,
        "valid_recall_at_20": recalls[-1],
    }


def write_run(run_dir: Path, cfg: Any, split: Any, model: Any, epochs: int, valid_recall: float) -> None:
    """The model as the run folder `python -m offline train` writes: split, checkpoint, metrics
    (marked as a benchmark's partial training) and config."""
    import yaml

    from offline.train.run import CHECKPOINT_FILE, METRICS_FILE
    from offline.train.trainer import Checkpoint

    spec = cfg.model_spec()
    split.save(run_dir / "split")
    Checkpoint(run_dir / CHECKPOINT_FILE, spec).save(model, epochs, {"recall@20": valid_recall})
    metrics = {"model": spec.name, "content_mode": spec.content_mode, "tau": spec.tau, "split": split.summary(),
               "best_epoch": epochs, "valid": {"recall@20": valid_recall},
               "benchmark": "bench_scale.py: only the timed batches of each epoch were trained"}
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    config = cfg.model_copy(update={"out": run_dir}).model_dump(mode="json")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def name_stand_in_clip(features: Path) -> None:
    """Record a random-init `cliper-minilm` as the features' CLIP (module docstring), once."""
    from offline.clip.model import ClipSpec, load_clip

    meta_path = features / ITEMS_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if "clip" not in meta:
        meta.update(clip=load_clip(ClipSpec(), "cpu").identity, pooling="sum", max_chunks=8)
        meta_path.write_text(json.dumps(meta), encoding="utf-8")


def timed_command(args: list[str], log: Path) -> tuple[float, float, int]:
    """Run `python -m offline ARGS` with its output in `log`: (seconds, peak RSS GB, exit code)."""
    usage = log.with_suffix(".time")
    with log.open("w", encoding="utf-8") as out:
        done = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(usage), sys.executable, "-m", "offline",
                               *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds, kilobytes = usage.read_text(encoding="utf-8").split()[-2:]
    return float(seconds), int(kilobytes) * 1024 / GB, done.returncode


def export_and_verify(run_dir: Path, bundle: Path, index: str, search_params: str) -> dict[str, Any]:
    """`offline export` and `offline verify` of a written run, timed (module docstring)."""
    export_log, verify_log = run_dir / "export.log", run_dir / "verify.log"
    export_s, export_peak, code = timed_command(
        ["export", "--run", str(run_dir), "--out", str(bundle), "--index-factory", index, "--search-params",
         search_params, "--clip-index-factory", index, "--clip-search-params", search_params, "--no-thumbnails"],
        export_log)
    if code != 0:
        raise RuntimeError(f"export failed (exit {code}); see {export_log}")
    built = [float(seconds) for stop, total, seconds in INDEX_PROGRESS.findall(export_log.read_text()) if stop == total]
    verify_s, verify_peak, _ = timed_command(["verify", str(bundle), "--run", str(run_dir)], verify_log)
    checks = VERIFY_ROW.findall(verify_log.read_text(encoding="utf-8"))
    return {"export_seconds": export_s, "export_peak_gb": export_peak, "index_build_seconds": built,
            "bundle_gb": sum(path.stat().st_size for path in bundle.iterdir()) / GB,
            "verify_seconds": verify_s, "verify_peak_gb": verify_peak, "verify_checks": len(checks),
            "verify_failed": [name for name, result in checks if result == "FAILED"]}


def isolated(*args: Any) -> dict[str, Any]:
    """`measure` in a fresh process, so each row's peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def markdown(header: list[str], cells: list[list[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "scale", "users", "items", "interactions", "train pairs", "s / epoch", "eval s", "peak RSS GB",
              "loaded GB", "build s", "build peak GB", "cold map s", "cold map peak GB"]
    cells = []
    for row in rows:
        partial = "*" if row["batches_measured"] < row["batches"] else ""
        partial_eval = "*" if row["valid_users_timed"] < row["valid_users"] else ""
        cold = (["–", "–"] if row["cold_map_seconds"] is None
                else [f"{row['cold_map_seconds']:.1f}", f"{row['cold_map_peak_gb']:.2f}"])
        cells.append([row["model"], row["scale"], f"{row['users']:,}", f"{row['items']:,}", f"{row['interactions']:,}",
                      f"{row['train_pairs']:,}", f"{row['epoch_seconds']:.1f}{partial}",
                      f"{row['eval_seconds']:.1f}{partial_eval}", f"{row['peak_gb']:.2f}", f"{row['loaded_gb']:.2f}",
                      f"{row['build_seconds']:.1f}", f"{row['build_peak_gb']:.2f}", *cold])
    return markdown(header, cells)


def export_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "scale", "items", "export s", "FAISS item + CLIP index s", "export peak RSS GB", "bundle GB",
              "verify s", "verify peak RSS GB", "verify checks failed"]
    cells = []
    for row in (row for row in rows if "export_seconds" in row):
        built = " + ".join(f"{seconds:.0f}" for seconds in row["index_build_seconds"]) or "(under 100,000: not logged)"
        failed = ", ".join(row["verify_failed"]) or "none"
        cells.append([row["model"], row["scale"], f"{row['items']:,}", f"{row['export_seconds']:.0f}", built,
                      f"{row['export_peak_gb']:.2f}", f"{row['bundle_gb']:.2f}", f"{row['verify_seconds']:.0f}",
                      f"{row['verify_peak_gb']:.2f}", f"{len(row['verify_failed'])} of {row['verify_checks']}: {failed}"])
    return markdown(header, cells)


@app.command()
def main(
    factors: Annotated[
        list[int] | None, typer.Option("--factors", help="scales to run [default: 1 and 10 unless --items]")
    ] = None,
    items: Annotated[
        list[int] | None, typer.Option("--items", help="worlds of this many items in Amazon-Clothing's shape")
    ] = None,
    models: Annotated[list[str], typer.Option("--models", help="backbones")] = DEFAULT_MODELS,  # noqa: B006
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    max_batches: Annotated[int, typer.Option(min=1, help="time at most this many batches of an epoch")] = 100,
    max_eval_users: Annotated[
        int, typer.Option(min=1, help="time the validation of at most this many users")
    ] = 50_000,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (the trainer's default is 1)")] = 1,
    work: Annotated[Path, typer.Option(help="where the scale worlds are written")] = ROOT / "build" / "scale",
    scale_config: Annotated[
        Path | None, typer.Option(help="YAML of ScaleConfig fields, e.g. smaller counts for a dry run")
    ] = None,
    export: Annotated[
        bool, typer.Option("--export/--no-export", help="export and verify each multi-modal row's model")
    ] = False,
    index: Annotated[str, typer.Option(help="FAISS factory of the exported item and CLIP indexes")] = "HNSW32",
    search_params: Annotated[str, typer.Option(help="FAISS search parameters of the exported indexes")] = "efSearch=128",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the rows as JSON")] = None,
) -> None:
    from offline.models import MODELS
    from offline.train.bench import machine

    worlds = [(f"x{factor}", {"factor": factor}) for factor in factors or ([] if items else [1, 10])]
    worlds += [(f"n{count}", amazon_shape(count)) for count in items or []]
    rows = []
    for scale, counts in worlds:
        folder = scale_world(work, scale, scale_config, **counts)
        for name in models:
            print(f"{name} at {scale} ...", flush=True)
            run_dir = work / "runs" / f"{scale}-{name}" if export and MODELS[name].multimodal else None
            if run_dir is not None:
                name_stand_in_clip(folder / FEATURES_DIR)
            row = {"scale": scale, **isolated(folder, name, epochs, max_batches, max_eval_users, threads, run_dir)}
            if run_dir is not None:
                print(f"exporting and verifying {run_dir} ...", flush=True)
                row.update(export_and_verify(run_dir, work / "bundles" / f"{scale}-{name}", index, search_params))
            print(json.dumps(row), flush=True)
            rows.append(row)
    cpu = machine()
    print(f"\n{cpu['cpu']} ({cpu['usable_cores']} cores), {threads} torch thread(s), {epochs} epochs, batch 2048")
    print(table(rows))
    print(
        "* timed on the first batches of each epoch (or users of the validation) and scaled to all of them"
    )
    if export:
        print(f"\nexport ({index}, {search_params}, no thumbnails) and verify of each multi-modal model")
        print(export_table(rows))
    if json_out is not None:
        json_out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    app()
