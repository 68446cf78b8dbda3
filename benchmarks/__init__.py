"""Side-by-side benchmark of this project against torchvision's Mask R-CNN (``tools/benchmark.py``).

Not part of the installed package: it is run from a checkout, like the tools.

May import: ``instseg_d2`` (any layer), torch, torchvision, detectron2.
"""
