"""Bounded reliability runs against real triomcp processes: ``python -m reliability [--quick]``."""
