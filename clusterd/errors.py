"""Errors raised by the cluster daemon; each integration's root error derives from `ClusterError`."""

from __future__ import annotations


class ClusterError(Exception):
    """Root of the cluster daemon's errors."""
