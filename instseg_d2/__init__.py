"""Mask R-CNN instance segmentation on Detectron2 for Penn-Fudan and balloon."""

__version__ = "0.1.0"
