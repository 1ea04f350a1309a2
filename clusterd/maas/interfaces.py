"""
What the rest of the cluster needs from MAAS.

`MAASClient` (HTTP) and `simulators.maas.FakeMAASClient` (no network)
both provide `IMAASClient`; one contract test suite runs against both.
Every method is a coroutine function and raises `clusterd.maas.errors.MAASError`
subclasses.  Machines, subnets and the rest are MAAS's own JSON dicts.
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IMAASClient"]


class IMAASClient(Interface):
    def version():  # type: ignore[no-untyped-def]
        """MAAS's version document (anonymous)."""

    def whoami():  # type: ignore[no-untyped-def]
        """The user the API key belongs to."""

    def list_machines(*, hostname=(), status=(), zone=(), pool=(), tags=()):  # type: ignore[no-untyped-def]
        """Machines, filtered; each filter is a str or a sequence of str (any of them matches)."""

    def get_machine(system_id):  # type: ignore[no-untyped-def]
        """One machine."""

    def commission(system_id, *, enable_ssh=False, skip_networking=False, skip_storage=False, testing_scripts=None):  # type: ignore[no-untyped-def]
        """Start commissioning; the machine as MAAS returned it."""

    def deploy(system_id, *, distro_series=None, hwe_kernel=None, user_data=None, hostname=None):  # type: ignore[no-untyped-def]
        """Allocate (when Ready) and deploy; the machine, now Deploying."""

    def release(system_id, *, erase=False, secure_erase=False, quick_erase=False):  # type: ignore[no-untyped-def]
        """Release; idempotent on Ready and Releasing."""

    def power_on(system_id):  # type: ignore[no-untyped-def]
        """Ask MAAS to power the machine on (it needs an owner)."""

    def power_off(system_id, *, stop_mode="hard"):  # type: ignore[no-untyped-def]
        """Ask MAAS to power the machine off ("soft" or "hard")."""

    def query_power_state(system_id):  # type: ignore[no-untyped-def]
        """Ask the BMC now: "on", "off", "unknown" or "error"."""

    def subnets():  # type: ignore[no-untyped-def]
        """All subnets."""

    def fabrics():  # type: ignore[no-untyped-def]
        """All fabrics."""

    def vlans(fabric_id):  # type: ignore[no-untyped-def]
        """The VLANs of one fabric."""

    def spaces():  # type: ignore[no-untyped-def]
        """All spaces."""

    def zones():  # type: ignore[no-untyped-def]
        """All availability zones."""

    def resource_pools():  # type: ignore[no-untyped-def]
        """All resource pools."""

    def close():  # type: ignore[no-untyped-def]
        """Release connections; the client is not used afterwards."""
