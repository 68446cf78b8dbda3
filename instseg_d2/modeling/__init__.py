"""Model-level helpers of this project (speed-ups that keep results; see ``optimize``)."""
