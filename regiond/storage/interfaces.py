"""
What the storage API depends on: a Waldur client and a source of project
GIDs.  `WaldurClient` and `HpcUserClient` provide them; the simulators in
``simulators.waldur`` and ``simulators.hpcuser`` stand behind both in tests.
"""

from __future__ import annotations

from zope.interface import Interface


class IWaldurClient(Interface):
    """The Waldur calls the storage API makes (coroutines)."""

    def resources_page(offering_slugs, page, page_size, state=None):  # type: ignore[no-untyped-def]
        """One page of marketplace resources (a `WaldurPage`) of the comma-separated offering slugs."""

    def all_resources(offering_slugs, state=None):  # type: ignore[no-untyped-def]
        """Every marketplace resource of the offerings, through all pages."""

    def offering_customers(offering_uuid):  # type: ignore[no-untyped-def]
        """Every customer of the offering (by UUID), through all pages."""


class IGidSource(Interface):
    """Project GIDs (a coroutine)."""

    def project_gids(names):  # type: ignore[no-untyped-def]
        """The GID of each project in `names` (None for unknown ones), in one request."""
