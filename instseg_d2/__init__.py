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

# Detectron2's resize of bitmask masks goes through PIL, whose arrays are read-only, and
# annotations_to_instances wraps them with torch.from_numpy: PyTorch warns, though the masks are
# only read. Its anchor generator calls torch.meshgrid without `indexing` (a filter cannot tell
# whose call that is: it hides the notice for every caller). Neither is about this project's code
# or anything a user can act on.
warnings.filterwarnings(
    "ignore",
    message="The given NumPy array is not writable",
    category=UserWarning,
    module=r"detectron2\.data\.detection_utils",
)
warnings.filterwarnings(
    "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
)
