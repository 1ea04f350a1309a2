"""Machines: the region's inventory of every site's MAAS machines, and actions on them."""
