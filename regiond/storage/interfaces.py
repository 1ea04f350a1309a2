"""The narrow interfaces the storage API depends on (Waldur and the GID source)."""

from __future__ import annotations

from typing import Any

from zope.interface import Interface


class IWaldurClient(Interface):
    """The Waldur calls the storage API makes."""

    async def resources_page(offering_slugs: str, page: int, page_size: int, state: str | None = None) -> Any:
        """One page of marketplace resources (a `WaldurPage`) of the comma-separated offering slugs."""

    async def all_resources(offering_slugs: Any, state: str | None = None) -> list[Any]:
        """Every marketplace resource of the offerings, through all pages."""

    async def offering_customers(offering_uuid: str) -> list[Any]:
        """Every customer of the offering, through all pages."""


class IGidSource(Interface):
    """Project GIDs."""

    async def project_gids(names: list[str]) -> dict[str, int | None]:
        """The GID of each project (None for unknown ones), in one request."""
