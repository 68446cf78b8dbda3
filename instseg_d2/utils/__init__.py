"""Helpers shared by every layer: user-facing errors, atomic file writes, the tools' command
line, checked downloads. Imports only the standard library and third-party packages, never
another part of instseg_d2."""
