"""Pictures of models and runs: drawings, color splash, comparison panels, plots, HTML report."""
