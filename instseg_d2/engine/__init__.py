"""Training and inference engines built on Detectron2's (trainer, batched predictor)."""
