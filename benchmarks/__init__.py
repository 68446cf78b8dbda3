"""Side-by-side benchmark of this project against torchvision's Mask R-CNN (``tools/benchmark.py``).

Not part of the installed package: it is run from a checkout, like the tools. It times the paths
users run: ``BatchPredictor`` for our inference rows and the project's ``Trainer.run_step`` for our
training rows (:mod:`.user_paths`), and the PyTorch fine-tuning tutorial's code for torchvision's,
plain and with channels-last + bf16 autocast (:mod:`.torchvision_reference`). Both models get the
same random weights and matched settings (:mod:`.models`); :mod:`.runners` times the sections
(:mod:`.timing`), :mod:`.accuracy` evaluates COCO AP, :mod:`.detection_match` checks that our
variants give the same detections, and :mod:`.tables` prints the results.

May import: ``instseg_d2`` (any layer), torch, torchvision, detectron2.
"""
