"""The label set, in the fixed order used by every model and file of the project."""
from __future__ import annotations

LABELS: tuple[str, ...] = ("pro", "anti", "neutral")
LABEL2ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
