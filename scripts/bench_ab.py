"""Two running services, A and B, timed on the same requests taking turns (a before/after check).

Each request goes to A, then the same one to B, one at a time over one keep-alive connection
per service, so that whatever else the machine is doing hits both alike. Prints p50/p95/p99 per
service and their ratio. Start the two services yourself (e.g. the code before a change in a git
worktree, and after it), each on its own port and bundle.

    .venv/bin/python scripts/bench_ab.py http://127.0.0.1:8001 http://127.0.0.1:8002 \
        --path '/users/user-{i}/recommendations?k=50' --requests 2000 --ids 50000
"""

import time

import httpx
import numpy as np
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    a: str = typer.Argument(..., help="base URL of service A (before)"),
    b: str = typer.Argument(..., help="base URL of service B (after)"),
    path: str = typer.Option("/users/user-{i}/recommendations?k=50", help="request path; {i} is a random id"),
    requests: int = typer.Option(2000, help="requests to each service (the first tenth warms up)"),
    ids: int = typer.Option(50_000, help="{i} is drawn from 0..ids-1"),
    seed: int = typer.Option(0),
) -> None:
    picks = np.random.default_rng(seed).integers(0, ids, requests)
    latencies: dict[str, list[float]] = {a: [], b: []}
    with httpx.Client(base_url=a, timeout=30) as client_a, httpx.Client(base_url=b, timeout=30) as client_b:
        for i in picks.tolist():
            for base, client in ((a, client_a), (b, client_b)):
                start = time.perf_counter()
                response = client.get(path.format(i=i))
                latencies[base].append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise RuntimeError(f"{base}{path.format(i=i)}: {response.status_code} {response.text[:200]}")
    stats = {base: np.percentile(np.array(values[len(values) // 10 :]) * 1000, [50, 95, 99])
             for base, values in latencies.items()}
    print(f"\n{requests} requests each, taking turns: {path}\n")
    print("| service | p50 ms | p95 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, base in (("A", a), ("B", b)):
        print(f"| {name} {base} | " + " | ".join(f"{value:.2f}" for value in stats[base]) + " |")
    ratio = stats[b] / stats[a]
    print("| B / A | " + " | ".join(f"{value:.2f}x" for value in ratio) + " |")


if __name__ == "__main__":
    app()
