"""ONNX Runtime vs torch throughput of the CLIP image and text encoders (items/s, CPU).

    .venv/bin/python scripts/bench_encoders.py [--model cliper-minilm] [--checkpoint RUN/clip/checkpoint.pt]

Exports the encoders of the given CLIP to a temporary folder (as `offline export` does), then
times batches of 1 and 64 through torch and ONNX Runtime on the same inputs, and prints a
markdown table with the machine it ran on. The torch text path is the offline one, which trims
the padding of a Hugging Face tower; "padding trimmed" feeds ONNX Runtime the same trimmed ids.
"""

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from cliper.tokenizer import trim_padding
from offline.clip.model import ClipSpec, load_clip
from offline.export.onnx_export import cpu_session, export_clip_encoders

PROMPT = "The product title is Red striped ceramic mug with a wide handle."


def throughput(run: Callable[[], object], batch: int, seconds: float) -> float:
    """Items per second of `run` (one batch per call), after two warm-up calls."""
    run()
    run()
    calls, started = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 3:
            return calls * batch / elapsed


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0))
    return (
        f"{cpu}, {cores} cores usable; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cliper-minilm", help="shipped config or open_clip name")
    parser.add_argument("--pretrained", default=None, help="open_clip tag or weights file")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a train-clip checkpoint.pt")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = parser.parse_args()

    clip = load_clip(ClipSpec(model=args.model, pretrained=args.pretrained, checkpoint=args.checkpoint))
    size = clip.preprocess_config.image_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image_path, text_path = Path(tmp) / "image_encoder.onnx", Path(tmp) / "text_encoder.onnx"
        export_clip_encoders(clip, image_path, text_path)
        image_session, text_session = cpu_session(image_path), cpu_session(text_path)
        for batch in args.batches:
            pixels = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
            ids = clip.tokenize([PROMPT] * batch)
            cases = {
                "image": (
                    partial(clip.encode_images, pixels),
                    partial(image_session.run, None, {"pixel_values": pixels}),
                ),
                "text": (partial(clip.encode_tokens, ids), partial(text_session.run, None, {"input_ids": ids.numpy()})),
            }
            if clip.hf_text is not None:  # a dynamic sequence axis: the service may trim padding
                trimmed = trim_padding(ids.numpy(), clip.hf_text.config.pad_token_id)
                trimmed_run = partial(text_session.run, None, {"input_ids": trimmed})
                cases["text, padding trimmed"] = (cases["text"][0], trimmed_run)
            for encoder, (torch_run, onnx_run) in cases.items():
                torch_rate = throughput(torch_run, batch, args.seconds)
                onnx_rate = throughput(onnx_run, batch, args.seconds)
                rows.append((encoder, batch, torch_rate, onnx_rate))

    print(f"CLIP `{args.model}` (image {size}px, context {clip.context_length} tokens) on {machine()}\n")
    print("| encoder | batch | torch items/s | ONNX Runtime items/s | ONNX / torch |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for encoder, batch, torch_rate, onnx_rate in rows:
        print(f"| {encoder} | {batch} | {torch_rate:.1f} | {onnx_rate:.1f} | {onnx_rate / torch_rate:.2f}x |")


if __name__ == "__main__":
    main()
