"""Sweep backends and outputs for `specc sweep` (see specc/sweeping.py)."""
