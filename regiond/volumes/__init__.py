"""Volumes: CloudStack (OSSEA) configuration per cluster, and migration volume jobs."""
