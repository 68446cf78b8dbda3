"""instseg_d2: Mask R-CNN instance segmentation on Detectron2 for small datasets of your own.

Sub-packages, from the bottom layer up (a module imports only from its own layer and below):
``utils`` and ``config``, ``checkpoint`` and ``modeling``, ``data``, ``engine``, ``evaluation``,
``visualization``. The command-line tools in ``tools/`` sit on top.
"""

import warnings

__version__ = "0.1.0"

# Deprecation notices that third-party imports print on every start (detectron2 decorates some
# functions with @torch.jit.script; detectron2.model_zoo imports pkg_resources). They are not about
# this project's code and say nothing a user can act on.
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
