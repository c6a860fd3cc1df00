"""A worker's bundle is memory-mapped, not copied (issue 17): reading it and building the catalog,
users and popularity from it, then touching every vector in searches, leaves the bundle's pages
file-backed (shared by all worker processes of a host) instead of in the process's own memory."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_bundle import content, fields

from cliper.bundle import write_bundle

ROOT = Path(__file__).resolve().parents[2]
K = 64

MEASURE = """
import json, sys
import numpy as np
from cliper.bundle import read_bundle
from service.catalog import ItemCatalog
from service.popularity import Popularity
from service.users import UserState


def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
    kb = {name: int(value.split()[0]) for name, value in fields.items()}
    return {"anonymous": kb["Anonymous"] / 1024, "rss": kb["Rss"] / 1024}


before = memory()
bundle = read_bundle(sys.argv[1])
catalog = ItemCatalog.from_bundle(bundle, threads=1)
users = UserState(bundle)
popularity = Popularity(bundle, catalog.items)
queries = np.asarray(bundle.user_vectors[:64])
catalog.items.search(queries, 10)  # Flat: every item vector read
catalog.clip.search(np.asarray(bundle.clip_image[:64]), 10)
total = float(sum(np.asarray(users.vector(user)).sum() for user in bundle.user_ids))  # every user vector
popularity.top(10)
after = memory()
print(json.dumps({name: after[name] - before[name] for name in after}))
"""


def test_reading_a_bundle_copies_none_of_its_arrays(tmp_path: Path) -> None:
    data = content(n_users=40_000, n_items=100_000)
    data.user_vectors = np.random.default_rng(1).normal(size=(40_000, K))
    data.item_vectors = np.random.default_rng(2).normal(size=(100_000, K))
    write_bundle(tmp_path / "bundle", fields(dims={"image": 4, "text": 4, "item": K}), data)
    sizes = {path.name: path.stat().st_size / 2**20 for path in (tmp_path / "bundle").iterdir()}
    arrays_mb = sum(size for name, size in sizes.items() if name.endswith((".npy", ".faiss", ".json")))
    read_mb = sizes["index.faiss"] + sizes["user_vectors.npy"]  # what the searches and the user vectors read
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "bundle")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    grown = json.loads(done.stdout.strip().splitlines()[-1])
    assert read_mb > 34 and arrays_mb > 60  # the Flat index and the item vectors 25 MB each, user vectors 10 MB
    assert grown["rss"] - grown["anonymous"] > 0.9 * read_mb, grown  # resident and file-backed
    assert grown["anonymous"] < 0.15 * arrays_mb, grown  # copied, they would be anonymous memory
