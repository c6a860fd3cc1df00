"""How many users to score at once against a catalog: full ranking (evaluation, the cold map's
fit) scores users in batches so that one batch's users x items scores stay within a fixed
number of bytes, whatever the catalog's size."""

SCORE_BYTES = 256 * 2**20  # the most one batch's score matrix may take


def user_batch_size(n_items: int, batch_size: int, bytes_per_score: int = 4, score_bytes: int = SCORE_BYTES) -> int:
    """Users per batch: at most `batch_size`, and few enough that their scores over `n_items`
    fit in `score_bytes` (291 users over 230,330 items in 256 MiB of float32)."""
    return max(1, min(batch_size, score_bytes // (bytes_per_score * max(n_items, 1))))
