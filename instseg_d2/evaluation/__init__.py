"""How good a model is and how sure that number is: analyses of evaluation results.

* :mod:`.coco_ap`: COCO AP/AP50/AP75 of any multiset of the test images (an image drawn twice
  counts twice), from pycocotools' per-image matching, equal to ``COCOeval`` on the full set.
* :mod:`.bootstrap`: 95% intervals of one evaluation by resampling its test images, single or
  paired (two models on the same images).
* :mod:`.intervals`: t- and percentile intervals, the one place for them.
* :mod:`.cross_validation`: the folds of a k-fold cross-validation, the state of each fold's run
  folder, and the summary over folds (``cv_summary.json/.md``).
* :mod:`.comparison`: two sets of runs paired by fold or seed, the interval of the difference
  and a plain verdict.
* :mod:`.segm_eval`, :mod:`.error_analysis`, :mod:`.annotation_candidates`, :mod:`.curves`: what
  is wrong in a model's predictions on a dataset beyond the COCO metrics: per-image errors and
  their AP cost, likely annotation mistakes, PR curves, F1 thresholds and a confusion matrix.

Layering: this package sits above :mod:`instseg_d2.engine` and below
:mod:`instseg_d2.visualization`; it may import ``engine``, ``data``, ``config`` and ``utils``,
never ``visualization`` or the tools (plots of its results are drawn in ``visualization``).
"""
