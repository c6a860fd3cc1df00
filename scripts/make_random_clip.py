"""Write a randomly initialised open_clip model as an open_clip checkpoint file.

    .venv/bin/python scripts/make_random_clip.py --model ViT-B-32 --out build/vit-b-32-random.bin

The file is a plain state dict, the format of open_clip's released `open_clip_pytorch_model.bin`
files, so `--clip-model ViT-B-32 --clip-pretrained FILE` (pipeline) or `--clip ViT-B-32
--pretrained FILE` (features) load it exactly as they load real weights. Where no pretrained
CLIP can be had, this gives the real architecture's graph sizes, context length and image size
for benchmarks and end-to-end runs; its embeddings mean nothing.

The weights are seeded by `--seed`, which differs from the seed `load_clip` uses for a random
init by default, so loading the file visibly changes the model.
"""

import argparse
from pathlib import Path

import open_clip
import torch

from offline.clip.model import INIT_SEED, register_configs

DEFAULT_SEED = INIT_SEED + 1


def write_random_checkpoint(model_name: str, out: Path, seed: int = DEFAULT_SEED) -> Path:
    """Create `model_name` with open_clip's random init under `seed` and save its state dict at `out`."""
    register_configs()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(model_name, pretrained=None, pretrained_text=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (or a shipped config)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file to write (.bin or .pt)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="torch seed of the random init")
    args = parser.parse_args()
    path = write_random_checkpoint(args.model, args.out, args.seed)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): random-init {args.model}, seed {args.seed}")


if __name__ == "__main__":
    main()
