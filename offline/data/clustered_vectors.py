"""Synthetic content features shaped like a real catalog's CLIP embeddings, for kNN benchmarks.

Uniform noise on the sphere is the wrong test for a nearest-neighbour index: in 512 dimensions
every pair is nearly orthogonal, no point has meaningfully near neighbours, and an approximate
index looks either hopeless or (with few clusters) trivially good. A catalog has instead:
- a long tail of categories: cluster sizes follow a Zipf law (a few huge categories, many
  small ones), here with exponent `zipf` over `n_items / mean_cluster` clusters;
- a shared direction (CLIP's "cone": unrelated items still have cosine about 0.3-0.5);
- a decaying spectrum: variance falls off as a power of the component index, so most of the
  spread lies in a few dozen directions, and the within-cluster spread differs per cluster.
"""

import numpy as np

CHUNK = 65536


def _mix(rng: np.random.Generator, n: int, spectrum: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """`n` Gaussian vectors with per-component scales `spectrum`, rotated by `basis`."""
    return (rng.standard_normal((n, len(spectrum)), dtype=np.float32) * spectrum) @ basis


def clustered_unit_vectors(
    n_items: int,
    dim: int = 512,
    *,
    mean_cluster: int = 100,
    zipf: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """`(n_items, dim)` float32 unit vectors with long-tail clusters (see the module docstring)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = (np.arange(1, dim + 1, dtype=np.float32) ** -0.5) * np.sqrt(dim / 8, dtype=np.float32)
    n_clusters = max(1, n_items // mean_cluster)
    shares = np.arange(1, n_clusters + 1, dtype=np.float64) ** -zipf
    cluster = rng.choice(n_clusters, size=n_items, p=shares / shares.sum())
    common = rng.standard_normal(dim).astype(np.float32)
    common *= 0.8 / np.linalg.norm(common)
    centers = common + 0.6 * _unit(_mix(rng, n_clusters, spectrum, basis))
    spread = rng.uniform(0.25, 0.6, size=n_clusters).astype(np.float32)
    out = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, CHUNK):
        rows = cluster[start : start + CHUNK]
        noise = _unit(_mix(rng, len(rows), spectrum, basis)) * spread[rows, None]
        out[start : start + CHUNK] = _unit(centers[rows] + noise)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
