"""Batched forward passes shared by training (dev evaluation) and serving."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# torch is imported inside the functions that use it: serving with an exported graph (ONNX
# Runtime, OpenVINO) uses this module's CPU helpers and never loads torch (~2 s of cold start).


def physical_cores() -> int:
    """Physical cores (not hyper-threads): GEMM-bound torch work gets slower, not faster, past them."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            pairs, phys = set(), "0"
            for line in fh:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    pairs.add((phys, line.split(":", 1)[1].strip()))
        if pairs:
            return len(pairs)
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2)


def cpu_flags() -> frozenset[str]:
    """The flags line of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Native bf16 matmul (AVX512-BF16 or AMX); without it bf16 is emulated and slow."""
    return bool((cpu_flags() if flags is None else flags) & {"avx512_bf16", "amx_bf16"})


def autocast(precision: str) -> Any:
    """bf16 autocast on CPU for ``precision == "bf16"``, else a no-op context (training and serving)."""
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, so dynamic padding wastes little compute."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batched_logits(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 64) -> Any:
    """Logits (n, num_labels) in input order; texts are truncated to max_length (callers window long ones)."""
    import torch

    with torch.inference_mode():
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        ids = enc["input_ids"]
        out = torch.empty(len(ids), model.config.num_labels)
        was_training = model.training
        model.eval()
        for batch in length_sorted_batches([len(x) for x in ids], batch_size):
            padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            out[batch] = model(**padded).logits.float()
        model.train(was_training)
        return out
