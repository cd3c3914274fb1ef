"""Serving: the Python API (``StanceClassifier``, ``score_articles``) and the ``score``/``demo`` commands.

Never imports ``exportstance.training``; importing this package itself loads nothing heavy.
"""
from __future__ import annotations

# Inference precisions of StanceClassifier; here so the CLI can offer them without importing torch.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
# Inference engines (see serve.engines); "auto" picks one by the CPU's flags.
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
