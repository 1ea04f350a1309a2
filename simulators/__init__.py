"""Simulators of the systems clusters drive (MAAS, CloudStack, Waldur, VIMs); added with their issues."""
