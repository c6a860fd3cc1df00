"""A real-size CLIP on CPU, end to end (issue 17): open_clip's ViT-B-32, randomly initialised, through
the path a user with real weights takes, then the bundle's encoders in fp32 and int8.

    .venv/bin/python scripts/bench_real_clip.py --data ../shared/data/movielens100k_posters --views movies \
        [--model ViT-B-32] [--items 200] [--work /tmp/cliper-real-clip] [--max-load 2.5]

1. scripts/make_random_clip.py writes WORK/MODEL-random.bin, a plain open_clip state dict;
2. WORK/catalog holds the --items most-rated items of DATA (their items.csv and interactions.csv
   rows; `images` is a link to DATA's folder), so that CPU features take minutes, not an hour;
3. `python -m offline features --clip MODEL --pretrained FILE`, `train` (FREEDOM, 5 epochs),
   `export --int8`, `verify`: each a subprocess, timed;
4. `python -m service --precision fp32|int8` on the bundle: a poster ingested by POST /items,
   a user's recommendations;
5. once the 1-minute load average is below --max-load (polled each minute for up to --wait-s;
   measured anyway after that, and said so), in this process, `ItemEncoder` at fp32 and int8:
   items/s of the image encoder, of the text encoder (all of an item's view prompts) and of a
   whole ingestion (`encode`: both encoders, the item tower, the CLIP embeddings) at batch 1 and
   16, in wall time with the service's thread count, and per CPU second with one ONNX Runtime
   thread (the process's CPU time, which other load on a shared machine barely changes); and
   (unless --no-cosine) int8's cosine to fp32 over every item's poster and
   text: CLIP image and fused-text embeddings, item vectors, plus the image embeddings' cosine
   after removing their fp32 mean (a random-init CLIP gives every image a large common part) and
   how many of each item's 10 nearest items (by image embedding) int8 keeps.
Prints markdown tables and the machine. The work folder is outside the repository by default:
it holds rows of the licensed data set. --reuse measures the bundle a previous run left in it.
"""

import argparse
import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_encoders import machine, throughput  # noqa: E402
from bench_serve import serve  # noqa: E402

from cliper.bundle import read_bundle  # noqa: E402
from cliper.encoding import EncodingLayout, ItemEncoding  # noqa: E402
from service.cpus import onnx_intra_op_threads, usable_cpus  # noqa: E402
from service.encoders import ItemEncoder, PreparedItem  # noqa: E402
from service.metrics import Metrics  # noqa: E402

PRECISIONS = ("fp32", "int8")
BATCHES = (1, 16)
NEIGHBOURS = 10


def subset_catalog(data: Path, out: Path, n_items: int) -> Path:
    """`out` as a catalog of DATA's `n_items` most-rated items and their interactions."""
    items = pd.read_csv(data / "items.csv", dtype=str, keep_default_na=False)
    interactions = pd.read_csv(data / "interactions.csv", dtype={"user_id": str, "item_id": str})
    top = set(interactions["item_id"].value_counts().index[:n_items])
    out.mkdir(parents=True, exist_ok=True)
    items[items["item_id"].isin(top)].to_csv(out / "items.csv", index=False)
    interactions[interactions["item_id"].isin(top)].to_csv(out / "interactions.csv", index=False)
    if not (out / "images").exists():
        (out / "images").symlink_to((data / "images").resolve(), target_is_directory=True)
    return out


def timed(name: str, command: list[str]) -> float:
    """Run `command`, print its last lines; its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and "%|" not in line]
    tail = "\n    ".join(lines[-4:])  # progress bars left out
    print(f"[{name}] {seconds:.0f} s, exit {done.returncode}\n    {tail}", flush=True)
    if done.returncode:
        raise SystemExit(f"{name} failed: {' '.join(command)}")
    return seconds


def end_to_end(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, float]]:
    """Steps 1-3: the checkpoint, the catalog, features, train, export --int8, verify."""
    checkpoint = work / f"{args.model}-random.bin"
    seconds = {}
    if not checkpoint.is_file():
        seconds["checkpoint"] = timed("checkpoint", [sys.executable, str(ROOT / "scripts" / "make_random_clip.py"),
                                                     "--model", args.model, "--out", str(checkpoint)])
    catalog = subset_catalog(args.data, work / "catalog", args.items)
    run, offline = work / "run", [sys.executable, "-m", "offline"]
    seconds["features"] = timed("features", [*offline, "features", "--data", str(catalog), "--views", args.views,
                                             "--out", str(run), "--clip", args.model, "--pretrained", str(checkpoint)])
    config = {"data": str(catalog), "views": args.views, "features": str(run / "features"), "model": "freedom",
              "epochs": 5, "out": str(run / "train")}
    (work / "train.yaml").write_text(yaml.safe_dump(config))
    seconds["train"] = timed("train", [*offline, "train", "--config", str(work / "train.yaml")])
    bundle = run / "bundle"
    seconds["export --int8"] = timed("export", [*offline, "export", "--run", str(run / "train"), "--out", str(bundle),
                                                "--int8"])
    seconds["verify"] = timed("verify", [*offline, "verify", str(bundle)])
    return bundle, seconds


def catalog_items(catalog: Path, views_columns: list[str]) -> list[tuple[dict[str, str], Path]]:
    """Each catalog item's view fields and poster file."""
    items = pd.read_csv(catalog / "items.csv", dtype=str, keep_default_na=False)
    return [({column: row[column] for column in views_columns}, catalog / row["image_path"])
            for row in items.to_dict("records")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_service(bundle: Path, work: Path, item: tuple[dict[str, str], Path]) -> None:
    """Step 4: the service at each precision ingests a poster and recommends."""
    fields, poster = item
    user = read_bundle(bundle, verify=False).user_ids[0]
    for precision in PRECISIONS:
        with serve(bundle, work, free_port(), "--precision", precision) as base:
            body = {"item_id": f"poster-{precision}", "fields": fields,
                    "image_base64": base64.b64encode(poster.read_bytes()).decode()}
            started = time.perf_counter()
            created = httpx.post(f"{base}/items", json=body, timeout=120)
            ingest = time.perf_counter() - started
            recommended = httpx.get(f"{base}/users/{user}/recommendations", params={"k": 10}, timeout=60)
            encoders = httpx.get(f"{base}/health/ready", timeout=10).json()["checks"]["encoders"]
            print(f"  service {precision}: POST /items {created.status_code} in {ingest:.2f} s, recommendations "
                  f"{recommended.status_code}; encoders {encoders}", flush=True)
            if created.status_code != 201 or recommended.status_code != 200:
                raise SystemExit(f"the service at {precision} failed: {created.text[:300]} {recommended.text[:300]}")


def wait_for_quiet(max_load: float, wait_s: float) -> float:
    """Poll the 1-minute load average each minute until it is below `max_load` or `wait_s` passed."""
    deadline = time.monotonic() + wait_s
    while (load := os.getloadavg()[0]) >= max_load and time.monotonic() < deadline:
        print(f"  load {load:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(60)
    return load


def encoder_at(bundle: Path, precision: str, threads: int) -> ItemEncoder:
    return ItemEncoder(read_bundle(bundle, verify=False), Metrics(), threads=threads, precision=precision)


def cpu_throughput(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Items per CPU second of this process running `run`, after one warm-up call."""
    run()
    calls, started = 0, time.process_time()
    while (used := time.process_time() - started) < seconds or calls < 2:
        run()
        calls += 1
    return calls * batch / used


def cases(encoder: ItemEncoder, items: list[PreparedItem]) -> dict[str, Callable[[], object]]:
    """One batch through each encoder, and through a whole `encode`."""
    chunks = [chunk for item in items for view in item.prompts for chunk in view]
    return {
        "image encoder": partial(encoder.image.run, {"pixel_values": np.stack([item.pixels for item in items])}),
        "text encoder (all views)": partial(encoder.text.run, encoder.text_feeds(chunks)),
        "ingestion (encode)": partial(encoder.encode, items),
    }


def rates(encoders: dict[str, ItemEncoder], prepared: list[PreparedItem],
          measure: Callable[[Callable[[], object], int], float]) -> dict[tuple, float]:
    """`measure` (items/s) per (case, batch size, precision); the precisions take turns on each
    case, so a change of load on the shared machine hits them alike."""
    out = {}
    for batch in BATCHES:
        runs = {precision: cases(encoder, prepared[:batch]) for precision, encoder in encoders.items()}
        for case in runs[PRECISIONS[0]]:
            for precision in PRECISIONS:
                out[case, batch, precision] = measure(runs[precision][case], batch)
    return out


def encodings(encoder: ItemEncoder, prepared: list[PreparedItem]) -> ItemEncoding:
    packed = np.concatenate([encoder.encode(prepared[i : i + 16]) for i in range(0, len(prepared), 16)])
    return ItemEncoding.unpack(packed, EncodingLayout.of(encoder.manifest))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def neighbours(vectors: np.ndarray) -> np.ndarray:
    """Each row's NEIGHBOURS nearest other rows by cosine."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :NEIGHBOURS]


def agreement(fp32: ItemEncoding, int8: ItemEncoding) -> list[tuple[str, np.ndarray]]:
    """Per-item similarity of int8's encodings to fp32's."""
    mean = fp32.clip_image.mean(axis=0)
    kept = [len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(neighbours(fp32.clip_image),
                                                                 neighbours(int8.clip_image), strict=True)]
    return [
        ("CLIP image embedding, cosine", cosines(fp32.clip_image, int8.clip_image)),
        ("CLIP image embedding minus fp32 mean, cosine", cosines(fp32.clip_image - mean, int8.clip_image - mean)),
        (f"image top-{NEIGHBOURS} neighbours kept", np.asarray(kept)),
        ("CLIP fused text embedding, cosine", cosines(fp32.clip_text, int8.clip_text)),
        ("item vector (item tower), cosine", cosines(fp32.vector, int8.vector)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="catalog folder with images")
    parser.add_argument("--views", default="movies", help="views preset or YAML")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--items", type=int, default=200, help="most-rated items kept")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cliper-real-clip")
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per throughput measurement")
    parser.add_argument("--max-load", type=float, default=2.5, help="1-minute load average to wait for")
    parser.add_argument("--wait-s", type=float, default=1200.0, help="longest wait for that load")
    parser.add_argument("--reuse", action="store_true", help="measure the bundle of an earlier run in --work")
    parser.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=True,
                        help="int8's cosine to fp32 over every item")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    if args.reuse:
        bundle, stage_seconds = args.work / "run" / "bundle", {}
    else:
        bundle, stage_seconds = end_to_end(args, args.work)
    manifest = read_bundle(bundle, verify=False).manifest
    items = catalog_items(args.work / "catalog", manifest.views.columns)
    if not args.reuse:
        check_service(bundle, args.work, items[0])

    load = wait_for_quiet(args.max_load, args.wait_s)
    quiet = "below" if load < args.max_load else "NOT below"
    print(f"measuring at 1-minute load {load:.2f} ({quiet} {args.max_load})", flush=True)
    threads = onnx_intra_op_threads(0, 1, usable_cpus())  # what one service worker gets
    encoders = {precision: encoder_at(bundle, precision, threads) for precision in PRECISIONS}
    for precision, encoder in encoders.items():
        print(f"  {precision}: {encoder.graph_files}", flush=True)
    prepared = [encoders["fp32"].prepare(fields, Image.open(poster).convert("RGB")) for fields, poster in items]
    speed = {f"items/s, {threads} threads": rates(encoders, prepared, partial(throughput, seconds=args.seconds))}
    single = {precision: encoder_at(bundle, precision, 1) for precision in PRECISIONS}
    speed["items per CPU second, 1 thread"] = rates(single, prepared, partial(cpu_throughput, seconds=args.seconds))
    encoded = {precision: encodings(encoder, prepared) for precision, encoder in encoders.items()} if args.cosine else {}
    loads = os.getloadavg()

    sizes = {name: (bundle / name).stat().st_size / 2**20 for name in sorted(manifest.files) if name.endswith(".onnx")}
    print(f"\nCLIP `{args.model}` (random init from a checkpoint file; image {manifest.preprocess.image_size}px, "
          f"context {manifest.tokenizer.context_length} tokens), {len(items)} items x {len(manifest.views.view_names)} "
          f"views, on {machine()}; load average at the start {load:.2f}, at the end {loads[0]:.2f}\n")
    print("| stage | seconds |\n| --- | ---: |")
    for stage, seconds in stage_seconds.items():
        print(f"| {stage} | {seconds:.0f} |")
    print("\n| graph | MiB |\n| --- | ---: |")
    for name, size in sizes.items():
        print(f"| {name} | {size:.1f} |")
    for unit, table in speed.items():
        print(f"\n| {unit} | batch | fp32 | int8 | int8 / fp32 |\n| --- | ---: | ---: | ---: | ---: |")
        for case, batch, _ in list(table)[:: len(PRECISIONS)]:
            fp32, int8 = table[case, batch, "fp32"], table[case, batch, "int8"]
            print(f"| {case} | {batch} | {fp32:.2f} | {int8:.2f} | {int8 / fp32:.2f}x |")
    if encoded:
        print(f"\n| int8 vs fp32 over {len(items)} posters | mean | min |\n| --- | ---: | ---: |")
        for name, values in agreement(encoded["fp32"], encoded["int8"]):
            print(f"| {name} | {values.mean():.4f} | {values.min():.4f} |")


if __name__ == "__main__":
    main()
