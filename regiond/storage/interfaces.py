"""
What the storage API depends on: a Waldur client and a source of project
GIDs.  `WaldurClient` and `HpcUserClient` provide them; the simulators in
``simulators.waldur`` and ``simulators.hpcuser`` stand behind both in tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import Interface

if TYPE_CHECKING:
    from regiond.storage._waldur import WaldurPage


class IWaldurClient(Interface):
    """The Waldur calls the storage API makes (coroutines)."""

    def resources_page(
        offering_slugs: str, page: int, page_size: int, state: str | None = None
    ) -> Awaitable[WaldurPage]:
        """One page of marketplace resources (a `WaldurPage`) of the comma-separated offering slugs."""

    def all_resources(offering_slugs: Sequence[str], state: str | None = None) -> Awaitable[list[Any]]:
        """Every marketplace resource of the offerings, through all pages."""

    def offering_customers(offering_uuid: str) -> Awaitable[list[Any]]:
        """Every customer of the offering (by UUID), through all pages."""


class IGidSource(Interface):
    """Project GIDs (a coroutine)."""

    def project_gids(names: list[str]) -> Awaitable[dict[str, int | None]]:
        """The GID of each project in `names` (None for unknown ones), in one request."""
