"""Why an item is recommended: the user's items behind its score, and how its views were weighed.

A recommendation's score is the inner product of the user's vector and the item's. The user's
vector follows the items they interacted with, so the history items whose vectors have the
largest inner product with the recommended item's are the ones it is most like in the model's
own space: `because` lists them. `summary` puts an item's view weights into words. Under CLIPER
attention a view's weight says how well it agrees with the image: views at or above the uniform
weight agree with the picture, views below half of it do not. Other fusions weigh views by a
fixed rule, which the summary says instead.
"""

from collections.abc import Mapping, Sequence

import numpy as np

from cliper.manifest import Fusion
from cliper.views import GLOBAL_VIEW

BECAUSE = 3  # history items per explained item
HISTORY_LIMIT = 500  # the most recent history items an explanation looks at


def because(item_vectors: np.ndarray, history_ids: Sequence[str], history_vectors: np.ndarray,
            limit: int = BECAUSE) -> list[list[dict[str, object]]]:
    """Per item (a row of `item_vectors`), the `limit` history items with the largest inner
    product with it, best first."""
    if not len(history_ids):
        return [[] for _ in range(len(item_vectors))]
    scores = np.asarray(item_vectors, dtype=np.float32) @ np.asarray(history_vectors, dtype=np.float32).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :limit]
    return [[{"item_id": history_ids[j], "score": float(row_scores[j])} for j in order]
            for order, row_scores in zip(top, scores, strict=True)]


def summary(weights: Mapping[str, float], fusion: Fusion) -> str:
    """The view weights in words (module docstring)."""
    if not fusion.weighs_by_image:
        return f"this model's fusion ({fusion.mode}) weighs the views by a fixed rule, not by the image"
    uniform = 1 / len(weights)
    if all(0.8 * uniform <= weight <= 1.25 * uniform for weight in weights.values()):
        return "the image agrees with every view about equally"
    agree = [name for name, weight in weights.items() if weight >= uniform]
    disagree = [name for name, weight in weights.items() if weight < uniform / 2]
    text = f"the image agrees with {_listed(agree)}" if agree else "the image agrees with no view clearly"
    return f"{text}, not {_listed(disagree)}" if disagree else text


def _listed(names: Sequence[str]) -> str:
    named = [f"the {name} view" if name == GLOBAL_VIEW else f"the {name}" for name in names]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
