"""Overseer: a git-backed job runner."""
__version__ = "0.1.0"
