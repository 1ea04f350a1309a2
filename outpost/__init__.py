"""Outpost: shared configuration and secret handling, and the ``outpost`` admin command."""

__version__ = "0.1.0"
