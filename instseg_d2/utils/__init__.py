"""Small helpers shared across the project."""
