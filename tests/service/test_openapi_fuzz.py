"""The OpenAPI document is true: schemathesis drives every operation of the real server
(`python -m service`, with its API key) from /openapi.json and checks that nothing answers 5xx,
that every status code is documented for its operation and every body matches its schema.

Bounded: a fixed number of examples per operation and a fixed seed (about half a minute on two
cores). `schemathesis_hooks.py` gives `POST /items` real images so that ingestion is explored,
not only the 422 that random bytes get.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bundle_factory import FactoryBundle
from served import Served, served

HERE = Path(__file__).resolve().parent
API_KEY = "fuzz-key"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"
MAX_EXAMPLES = 60
SEED = 14


@pytest.fixture(scope="module")
def server(factory: FactoryBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with served(factory.path, tmp_path_factory.mktemp("fuzz") / "data", env={"CLIPER_API_KEY": API_KEY}) as server:
        yield server


def test_schemathesis_finds_no_failure(factory: FactoryBundle, server: Served, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "FUZZ_ITEM_IDS": ",".join(item.item_id for item in factory.items[:40]),
        "FUZZ_TEXT_COLUMNS": ",".join(factory.manifest.views.columns),
    }
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.base}/openapi.json", "--checks", CHECKS,
               "--header", f"X-API-Key: {API_KEY}", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
               "--workers", "1", "--request-timeout", "30", "--no-color"]
    # in tmp_path: schemathesis and hypothesis keep their caches in the working directory
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    report = result.stdout[-20_000:] + result.stderr[-5_000:]
    assert result.returncode == 0, report
    # every operation (schemathesis words the count differently when it has warnings to print)
    assert re.search(r"Operations:\s+14 selected / 14 total|Selected: 14/14\s+Tested: 14", report), report
    assert re.search(r"\d+ generated, \d+ passed", report), report  # and no "failed" or "errored"
    metrics = httpx.get(f"{server.base}/metrics").text
    ingested = float(re.search(r"^cliper_store_write_items_count (\S+)$", metrics, re.MULTILINE).group(1))
    assert ingested > 0, "no generated POST /items got as far as storing an item"
