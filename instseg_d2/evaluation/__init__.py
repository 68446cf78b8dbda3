"""How sure a number is: statistics over evaluation results.

* :mod:`.coco_ap`: COCO AP/AP50/AP75 of any multiset of the test images (an image drawn twice
  counts twice), from pycocotools' per-image matching, equal to ``COCOeval`` on the full set.
* :mod:`.bootstrap`: 95% intervals of one evaluation by resampling its test images, single or
  paired (two models on the same images).
* :mod:`.intervals`: t- and percentile intervals, the one place for them.
* :mod:`.cross_validation`: the folds of a k-fold cross-validation, the state of each fold's run
  folder, and the summary over folds (``cv_summary.json/.md``).
* :mod:`.comparison`: two sets of runs paired by fold or seed, the interval of the difference
  and a plain verdict.

Layering: this package sits above :mod:`instseg_d2.engine` and below
:mod:`instseg_d2.visualization`; it may import ``engine``, ``data``, ``config`` and ``utils``,
never ``visualization`` or the tools (plots of its results are drawn in ``visualization``).
"""
