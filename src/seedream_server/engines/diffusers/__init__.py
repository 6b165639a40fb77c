"""The diffusers engine: open-weight image models (SD, SDXL, FLUX.1, FLUX.2, Qwen-Image and their edit
variants) run locally through Hugging Face diffusers.

Importing this package needs neither torch nor diffusers (they are the optional ``diffusers`` extra);
constructing :class:`DiffusersEngine` without them raises :class:`ModelSetupError` saying
``pip install 'seedream-server[diffusers]'``.

Modules: ``options`` (the ``[[models]]`` keys), ``families`` (detection, sizes; pure), ``worker`` (one
thread per device, dynamic batching, cancellation), ``pipelines`` (loading and calling; all the torch),
``speed`` (caches, compilation, quantization, attention backends, VAE options; the start-up probe),
``engine`` (the ``Engine`` implementation).
"""

from ..base import Progress, ProgressHook
from .engine import DiffusersEngine
from .families import FAMILIES, Family, ModelInfo, ModelSetupError, detect, native_size
from .loading import INSTALL_HINT
from .options import OPTIONS, DiffusersOptions
from .worker import EngineStats

__all__ = [
    "FAMILIES",
    "INSTALL_HINT",
    "OPTIONS",
    "DiffusersEngine",
    "DiffusersOptions",
    "EngineStats",
    "Family",
    "ModelInfo",
    "ModelSetupError",
    "Progress",
    "ProgressHook",
    "detect",
    "native_size",
]
