"""Side-by-side benchmark of this project against torchvision's Mask R-CNN (``tools/benchmark.py``)."""
