"""The one place that patches the ML stack's imports for this torchvision.

basicsr 1.4.2 (imported by gfpgan and realesrgan) still does
``from torchvision.transforms.functional_tensor import rgb_to_grayscale``; torchvision removed that
module, and the function now lives in ``torchvision.transforms.functional``. We register an alias
module exposing just that name before anything imports basicsr. Import the networks through
:func:`import_ml_stack` (or import this module first) and never repeat the patch elsewhere.
"""

from __future__ import annotations

import sys
import types

__all__ = ["ALIAS", "install_torchvision_alias", "import_ml_stack"]

#: The module name basicsr imports.
ALIAS = "torchvision.transforms.functional_tensor"


def install_torchvision_alias() -> types.ModuleType:
    """Register :data:`ALIAS` if torchvision lacks it; return the module now registered under that name."""
    if ALIAS in sys.modules:
        return sys.modules[ALIAS]
    try:
        import torchvision.transforms.functional_tensor as existing  # older torchvision still has it

        return existing
    except ImportError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(ALIAS, "Alias kept for basicsr 1.4.2; see processor.engine.compat.")
    alias.rgb_to_grayscale = functional.rgb_to_grayscale  # the only name basicsr uses
    sys.modules[ALIAS] = alias
    return alias


def import_ml_stack() -> None:
    """Install the alias, then import basicsr, facexlib, gfpgan and realesrgan's architectures."""
    install_torchvision_alias()
    import basicsr.archs.rrdbnet_arch  # noqa: F401
    import facexlib.detection.retinaface  # noqa: F401
    import facexlib.parsing.parsenet  # noqa: F401
    import gfpgan.archs.gfpganv1_clean_arch  # noqa: F401
    import realesrgan.archs.srvgg_arch  # noqa: F401


install_torchvision_alias()
