"""exportstance: stance of German statements on export controls of AI chips to China.

Public API (imported lazily so that ``import exportstance`` stays cheap)::

    from exportstance import StanceClassifier, score_articles
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["StanceClassifier", "Prediction", "score_articles", "LABELS", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .model.labels import LABELS
    from .serve.classifier import Prediction, StanceClassifier
    from .serve.articles import score_articles


def __getattr__(name: str) -> Any:
    if name in ("StanceClassifier", "Prediction"):
        from .serve import classifier

        return getattr(classifier, name)
    if name == "score_articles":
        from .serve.articles import score_articles

        return score_articles
    if name == "LABELS":
        from .model.labels import LABELS

        return LABELS
    raise AttributeError(f"module 'exportstance' has no attribute {name!r}")
