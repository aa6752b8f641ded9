"""Keep the core working next to a torchvision that is installed but cannot be imported.

PyPI's torchvision is a CUDA build; next to the CPU torch this project pins, `import torchvision` raises
(`operator torchvision::nms does not exist`). `pip install lmms-eval` brings exactly that build. transformers
sees the package on disk, imports it from its image utilities and every image processor fails with it. Marking
torchvision as absent before transformers is imported sends transformers to its PIL image processors, which
are what our adapters use anyway. A torchvision that imports (a GPU machine) is left alone.

The check imports torch, so it runs only when something first imports a package that pulls in
transformers (`visrl-bench list` and `score` stay free of torch).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

log = logging.getLogger(__name__)

BROKEN_TORCHVISION: str | None = None  # why torchvision was hidden, when it was


def hide_broken_torchvision() -> str | None:
    """Import torchvision if it is installed; if that fails, make it look absent. Returns the reason it was
    hidden (None when it imports or is not installed)."""
    global BROKEN_TORCHVISION
    if "torchvision" in sys.modules:  # imported already, or hidden already
        return BROKEN_TORCHVISION
    try:
        if importlib.util.find_spec("torchvision") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # a broken build raises RuntimeError, not ImportError
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # find_spec() now answers None and `import` raises ImportError
        BROKEN_TORCHVISION = f"{type(exc).__name__}: {exc}"
        log.info("torchvision is installed but cannot be imported (%s); running without it", exc)
    return BROKEN_TORCHVISION


# packages whose import reaches transformers' image utilities
_TRIGGERS = frozenset({"transformers", "trl", "peft", "lmms_eval"})


class _CheckBeforeTransformers(importlib.abc.MetaPathFinder):
    """Runs the check when a trigger package is first imported, then steps aside for the real finders."""

    def find_spec(self, name, path=None, target=None):
        if name in _TRIGGERS:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            hide_broken_torchvision()
        return None


def check_torchvision_before_transformers() -> None:
    if any(name in sys.modules for name in _TRIGGERS):
        hide_broken_torchvision()  # late, but a later image-utils import can still take the PIL path
    elif not any(isinstance(f, _CheckBeforeTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _CheckBeforeTransformers())
