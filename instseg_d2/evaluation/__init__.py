"""Analyses of a model's predictions on a dataset, beyond the COCO metrics of the evaluator."""
