"""The GPU check's logic (scripts/gpu_check.sh runs it on a CUDA machine): is the GPU really in use, and how fast.

ONNX Runtime falls back to the CPU when its CUDA provider cannot start, and FAISS searches on the
CPU when it sees no GPU; both keep serving, so only a check that asks can tell. This one asks
twice: `preflight` (before anything is built) tries a CUDA session and a FAISS search on the GPU
in this process, and `run` asks each service it starts, through `GET /health/ready`, where its
encoders warmed up (`checks.encoders`) and where FAISS searches (`checks.index`). Either on the
CPU is a failure (exit 1, saying which and why), unless `--no-require-gpu` (a dry run on a CPU
machine, as the tests do).

    python scripts/gpu_check.py cuda-lib-dirs        the nvidia-* wheels' library folders (for LD_LIBRARY_PATH)
    python scripts/gpu_check.py preflight            what ONNX Runtime and FAISS find here
    python scripts/gpu_check.py assert-ready URL     a running service's /health/ready
    python scripts/gpu_check.py run [--bundle DIR] [--sizes 100000,1000000] [--out DIR]

`run` builds the benchmark's synthetic bundles (offline/export/synthetic_bundle.py, Flat index:
exact search, which FAISS runs on the GPU) in parallel, then for each size starts `python -m
service` with the CUDA provider first, asserts the GPU is in use, measures recommendations at
concurrency 1, 8 and 32 and POST /items with micro-batching, and prints one markdown table.
"""

import asyncio
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from bench_serve import bench_ingest, item_bodies, machine, percentiles, serve  # noqa: E402

CUDA = "CUDAExecutionProvider"
PROVIDERS = f"{CUDA},CPUExecutionProvider"  # CPU last: a silent fallback stays possible, and is what we detect
ENCODERS_ON_GPU = f"warm on {CUDA}"
INDEX_ON_GPU = "FAISS on GPU"
CONCURRENCY = (1, 8, 32)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class GpuNotInUse(Exception):
    """The CUDA provider or the GPU index is not the one in use; the message lists why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the GPU is not in use:\n" + "\n".join(f"  - {problem}" for problem in problems))


def ready_problems(body: Mapping[str, Any]) -> list[str]:
    """What a `/health/ready` answer says runs on the CPU (or is unknown): one line each for the
    encoders and the index; none when both are on the GPU."""
    checks = body.get("checks") or {}
    problems = []
    if body.get("status") not in ("ready", "degraded"):
        problems.append(f"the service is not ready: status {body.get('status')!r}, checks {checks}")
    encoders = checks.get("encoders")
    if encoders != ENCODERS_ON_GPU:
        problems.append(
            f"ONNX Runtime is on the CPU: /health/ready says encoders {encoders!r}, not {ENCODERS_ON_GPU!r}. The CUDA "
            "provider is missing (onnxruntime, not onnxruntime-gpu, is imported) or could not start (a CUDA or cuDNN "
            "library it could not load: see the service log)")
    index = checks.get("index")
    if index != INDEX_ON_GPU:
        problems.append(
            f"FAISS is on the CPU: /health/ready says index {index!r}, not {INDEX_ON_GPU!r}. faiss.get_num_gpus() is 0 "
            "in the service: a CPU build of FAISS is imported, or it sees no GPU")
    return problems


def ready_bodies(base: str, polls: int) -> list[dict[str, Any]]:
    """`polls` answers of /health/ready, each on a new connection (so several workers answer)."""
    bodies = []
    for _ in range(polls):
        response = httpx.get(f"{base}/health/ready", timeout=10)
        bodies.append(response.json() if response.headers.get("content-type") == "application/json"
                      else {"status": f"HTTP {response.status_code}: {response.text[:200]}"})
    return bodies


def assert_gpu_in_use(bodies: Iterable[Mapping[str, Any]]) -> None:
    """Raises GpuNotInUse with every distinct problem of the answers."""
    problems = list(dict.fromkeys(problem for body in bodies for problem in ready_problems(body)))
    if problems:
        raise GpuNotInUse(problems)


def cuda_lib_dirs() -> list[Path]:
    """The `lib` folders of the installed nvidia-* wheels (nvidia/cu13/lib, nvidia/cudnn/lib, ...),
    in sys.path order; none where no such wheel is installed."""
    spec = importlib.util.find_spec("nvidia")
    roots = [Path(entry) for entry in (spec.submodule_search_locations or [])] if spec else []
    return [lib for root in roots for lib in sorted(root.glob("*/lib")) if any(lib.glob("*.so*"))]


@dataclass
class Preflight:
    findings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _tiny_model() -> bytes:
    """y = x @ w (64 x 64), as ONNX bytes: enough to see which provider a session runs on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime of the last years reads
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _check_onnxruntime(report: Preflight) -> None:
    try:
        import onnxruntime as ort
    except ImportError as error:
        report.problems.append(f"onnxruntime does not import: {error}")
        return
    available = ort.get_available_providers()
    report.findings.append(f"onnxruntime {ort.__version__} from {Path(ort.__file__).parent}, providers {available}")
    if CUDA not in available:
        report.problems.append(f"onnxruntime {ort.__version__} at {Path(ort.__file__).parent} has no {CUDA}: a CPU "
                               "build is first on the path, not onnxruntime-gpu")
        return
    session = ort.InferenceSession(_tiny_model(), providers=PROVIDERS.split(","))
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    error = float(np.abs(session.run(None, {"x": x})[0] - x @ w).max())
    report.findings.append(f"a session asked for {PROVIDERS} runs on {session.get_providers()}; max error {error:.1e}")
    if session.get_providers()[0] != CUDA:
        report.problems.append(f"the CUDA provider did not start (the session fell back to {session.get_providers()}): "
                               "ONNX Runtime's error above names the library it could not load")
    elif error > 1e-2:
        report.problems.append(f"the CUDA session's result is off by {error:.3g}")


def _check_faiss(report: Preflight) -> None:
    try:
        import faiss
    except (ImportError, RuntimeError) as error:  # faiss-gpu raises RuntimeError for a missing CUDA wheel
        report.problems.append(f"faiss does not import: {error}")
        return
    gpus = faiss.get_num_gpus()
    report.findings.append(f"faiss {faiss.__version__} from {Path(faiss.__file__).parent}, GPUs {gpus}")
    if gpus == 0:
        build = ("a GPU build that finds no device (the driver, or CUDA_VISIBLE_DEVICES)"
                 if hasattr(faiss, "StandardGpuResources") else "a CPU build (faiss-cpu), not faiss-gpu-cuvs")
        report.problems.append(
            f"FAISS sees no GPU: faiss {faiss.__version__} at {Path(faiss.__file__).parent} is {build}")
        return
    rng = np.random.default_rng(2)
    keys, queries = rng.standard_normal((10_000, 64), dtype=np.float32), rng.standard_normal((16, 64), dtype=np.float32)
    exact = np.argsort(-(queries @ keys.T), axis=1)[:, :10]
    index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(64))
    index.add(keys)
    found = index.search(queries, 10)[1]
    report.findings.append(f"FAISS on the GPU: {type(index).__name__}, top 10 of 10,000 equal to numpy's for "
                           f"{int((found == exact).all(axis=1).sum())} of 16 queries")
    if not (found == exact).all():
        report.problems.append("FAISS on the GPU returned other neighbours than exact search in numpy")


def preflight() -> Preflight:
    """Which ONNX Runtime and FAISS this process imports, whether they run on the GPU, and what CUDA
    libraries are installed."""
    report = Preflight()
    report.findings.append(f"Python {sys.version.split()[0]} at {sys.executable}")
    cuda = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions()
                  if dist.metadata["Name"] and dist.metadata["Name"].lower().startswith(("nvidia-", "cuda-")))
    report.findings.append(f"CUDA wheels: {', '.join(cuda) or 'none'}")
    report.findings.append(f"their library folders: {', '.join(map(str, cuda_lib_dirs())) or 'none'}")
    report.findings.append(f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')}")
    _check_onnxruntime(report)
    _check_faiss(report)
    return report


def gpu_name() -> str:
    """The GPUs' names, memory and driver, as nvidia-smi gives them."""
    if shutil.which("nvidia-smi") is None:
        return "none (no nvidia-smi)"
    result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or result.stderr.strip()


def _build(bundle_dir: Path, items: int, users: int) -> float:
    """One benchmark bundle (Flat index), in a worker process; its seconds."""
    from offline.export.synthetic_bundle import build_scale_bundle

    start = time.perf_counter()
    build_scale_bundle(bundle_dir, n_items=items, n_users=users, index_factory="Flat")
    return time.perf_counter() - start


def build_bundles(sizes: list[int], users: int, folder: Path) -> dict[int, Path]:
    """The bundles of `sizes` items (built in parallel, once: an existing one is reused)."""
    bundles = {items: folder / f"bundle-{items}-{users}-Flat" for items in sizes}
    todo = {items: path for items, path in bundles.items() if not (path / "manifest.json").is_file()}
    if todo:
        print(f"building bundles of {', '.join(f'{n:,}' for n in todo)} items", flush=True)
        # spawned processes: torch's threads must not be in the services' parent
        with ProcessPoolExecutor(len(todo), mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = {items: pool.submit(_build, path, items, users) for items, path in todo.items()}
            for items, job in jobs.items():
                print(f"  bundle of {items:,} items built in {job.result():.1f} s", flush=True)
    return bundles


def bundle_ids(bundle: Path, name: str) -> np.ndarray:
    """A bundle's ids (`user_ids.npy` or `item_ids.npy`), memory-mapped."""
    return np.load(bundle / name, mmap_mode="r")


async def _cell(base: str, concurrency: int, seconds: float, users: np.ndarray, first: int) -> dict[str, float]:
    """Closed loop for `seconds`: `concurrency` clients (one connection each) ask recommendations
    (k=50) of users `first`, `first + 1`, ... in turn; latencies, req/s and the share from the cache."""
    latencies: list[float] = []
    cached = 0
    deadline = 0.0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal cached
        while not latencies or time.perf_counter() < deadline:
            user = users[(first + len(latencies)) % len(users)].decode()
            start = time.perf_counter()
            response = await client.get(f"/users/{user}/recommendations", params={"k": 50})
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"GET /users/{user}/recommendations: {response.status_code} {response.text[:300]}")
            cached += b'"from_cache":true' in response.content

    clients = [httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=1), timeout=120)
               for _ in range(concurrency)]
    start = time.perf_counter()
    deadline = start + seconds  # once the clients exist (each builds an SSL context)
    try:
        await asyncio.gather(*(client_loop(client) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    wall = time.perf_counter() - start
    return {"req_per_s": len(latencies) / wall, "requests": len(latencies), "from_cache": cached / len(latencies),
            **percentiles(latencies)}


@dataclass
class SizeResult:
    items: int
    startup_s: float
    encoders: str
    index: str
    recommendations: dict[int, dict[str, float]]
    ingest_items_per_s: float


def measure(bundle: Path, work: Path, port: int, workers: int, seconds: float, ingest: int, batch: int,
            require_gpu: bool) -> SizeResult:
    """One service over `bundle`: start-up, where it runs (asserted on the GPU when `require_gpu`),
    recommendations per concurrency, POST /items throughput."""
    from cliper.bundle import ITEM_IDS, USER_IDS, read_manifest

    users, items = bundle_ids(bundle, USER_IDS), len(bundle_ids(bundle, ITEM_IDS))
    start = time.perf_counter()
    # no snapshots: a 10^6-item one written at shutdown would outlast serve()'s wait
    with serve(bundle, work, port, "--workers", str(workers), "--snapshot-keep", "0") as base:
        startup = time.perf_counter() - start
        bodies = ready_bodies(base, polls=4 * workers)
        for line in dict.fromkeys(json.dumps(body["checks"]) for body in bodies if "checks" in body):
            print(f"  /health/ready checks: {line}", flush=True)
        if require_gpu:
            assert_gpu_in_use(bodies)
        checks = bodies[0].get("checks", {})
        first = int(asyncio.run(_cell(base, 8, min(seconds, 2.0), users, 0))["requests"])  # warm-up (cuBLAS, pools)
        cells = {}
        for concurrency in CONCURRENCY:
            cells[concurrency] = asyncio.run(_cell(base, concurrency, seconds, users, first))
            first += cells[concurrency]["requests"]
            cell = cells[concurrency]
            print(f"  recommendations c={concurrency:<2}: {cell['p50_ms']:.2f} / {cell['p99_ms']:.2f} ms p50/p99, "
                  f"{cell['req_per_s']:.0f} req/s", flush=True)
        posts = item_bodies(ingest + batch, read_manifest(bundle).views.columns)
        rate = bench_ingest(base, posts, batch)
        print(f"  POST /items: {rate:.1f} items/s ({batch} clients, the service's micro-batching)", flush=True)
    return SizeResult(items, startup, str(checks.get("encoders")), str(checks.get("index")), cells, rate)


def table(results: list[SizeResult], info: Mapping[str, str], workers: int, seconds: float, batch: int) -> str:
    """The results as one markdown table, under the machine's description."""
    cells = [f"c={c}: p50 / p99 ms, req/s" for c in CONCURRENCY]
    rows = [f"| {r.items:,} | {r.startup_s:.1f} | {r.encoders} | {r.index} | "
            + " | ".join(f"{r.recommendations[c]['p50_ms']:.2f} / {r.recommendations[c]['p99_ms']:.2f}, "
                         f"{r.recommendations[c]['req_per_s']:.0f}" for c in CONCURRENCY)
            + f" | {r.ingest_items_per_s:.1f} |" for r in results]
    return "\n".join([
        "## GPU check: `python -m service` asked for ONNX Runtime's CUDA provider and FAISS on the GPU "
        "(the encoders and index columns say where each ran)", "",
        *(f"- {key}: {value}" for key, value in info.items()),
        f"- service: `--workers {workers}`, CLIPER_PROVIDERS={PROVIDERS}, in-process cache; load: httpx async in one "
        f"process, {seconds:g} s per cell, GET /users/ID/recommendations?k=50 over distinct users; ingestion: "
        f"POST /items from {batch} clients", "",
        f"| items | start-up s | encoders | index | {' | '.join(cells)} | POST /items items/s |",
        "| " + " | ".join(["---"] * (5 + len(CONCURRENCY))) + " |",
        *rows,
    ])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _print_preflight(report: Preflight) -> None:
    print("preflight", flush=True)
    for line in report.findings:
        print(f"  {line}", flush=True)
    for line in report.problems:
        print(f"  PROBLEM: {line}", flush=True)


def _tail(path: Path, lines: int) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _fail(error: Exception) -> None:
    print(f"\nGPU CHECK FAILED: {error}", file=sys.stderr, flush=True)
    raise typer.Exit(1)


@app.command("cuda-lib-dirs")
def cuda_lib_dirs_command() -> None:
    """Print the nvidia-* wheels' library folders, colon-separated."""
    print(":".join(map(str, cuda_lib_dirs())))


@app.command("preflight")
def preflight_command() -> None:
    """Print what ONNX Runtime and FAISS find here; exit 1 unless both run on the GPU."""
    report = preflight()
    _print_preflight(report)
    if report.problems:
        _fail(GpuNotInUse(report.problems))


@app.command("assert-ready")
def assert_ready_command(
    base: str = typer.Argument(..., help="the service's base URL, e.g. http://127.0.0.1:8000"),
    polls: int = typer.Option(8, min=1, help="answers asked for, each on a new connection"),
) -> None:
    """Exit 1 unless every /health/ready answer says the encoders and the index are on the GPU."""
    try:
        assert_gpu_in_use(ready_bodies(base.rstrip("/"), polls))
    except GpuNotInUse as error:
        _fail(error)
    print(f"{base}: encoders and index on the GPU")


@app.command("run")
def run_command(
    out: Path = typer.Option(ROOT / "build" / "gpu-check", help="the table (gpu-check.md, .json) and services' logs"),
    work: Path = typer.Option(ROOT / "build" / "gpu-check-work", help="bundles and the services' data"),
    bundle: Path | None = typer.Option(None, help="use this bundle instead of building --sizes"),
    sizes: str = typer.Option("100000,1000000", help="items per built bundle, comma-separated"),
    users: int = typer.Option(50_000, help="users per built bundle"),
    workers: int = typer.Option(4, min=1, help="service worker processes"),
    seconds: float = typer.Option(4.0, min=0.1, help="seconds per recommendations cell"),
    ingest: int = typer.Option(512, min=1, help="items posted per size, after a warm-up batch"),
    batch: int = typer.Option(16, min=1, help="concurrent POST /items clients"),
    port: int = typer.Option(0, help="the services' port (0: a free one)"),
    require_gpu: bool = typer.Option(True, help="fail unless ONNX Runtime and FAISS run on the GPU"),
) -> None:
    """Preflight, bundles, then per size: a service, the GPU assertion, the benchmarks; one table."""
    from cliper.bundle import ITEM_IDS

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report = preflight()
    _print_preflight(report)
    if report.problems and require_gpu:
        _fail(GpuNotInUse(report.problems))
    info = {**machine(), "nvidia-smi": gpu_name()}
    bundles = ({len(bundle_ids(bundle, ITEM_IDS)): bundle} if bundle is not None
               else build_bundles([int(size) for size in sizes.split(",")], users, work))
    os.environ["CLIPER_PROVIDERS"] = PROVIDERS  # the services inherit it
    results: list[SizeResult] = []
    for items, path in bundles.items():
        print(f"service over {items:,} items", flush=True)
        service_port = port or free_port()
        log = work / f"service-{service_port}.log"
        try:
            results.append(measure(path, work, service_port, workers, seconds, ingest, batch, require_gpu))
        except Exception as error:
            if log.is_file():
                print(f"the service's log ends:\n{_tail(log, 40)}", flush=True)
            if isinstance(error, GpuNotInUse):
                _fail(error)
            raise
        finally:
            if log.is_file():
                shutil.copy(log, out / f"service-{items}.log")
        print(f"  ({time.perf_counter() - started:.0f} s since the start)", flush=True)
        text = table(results, info, workers, seconds, batch)
        (out / "gpu-check.md").write_text(text + "\n")
        (out / "gpu-check.json").write_text(json.dumps({"machine": info, "results": [asdict(r) for r in results]},
                                                       indent=2))
    print(f"\n{text}\n\nthe whole check took {time.perf_counter() - started:.0f} s; table in {out / 'gpu-check.md'}")


if __name__ == "__main__":
    app()
