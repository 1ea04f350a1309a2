"""The connection registry: routing calls to clusters by uuid."""

from __future__ import annotations

from twisted.internet.task import Clock

from rpc.errors import NoConnectionsAvailable
from regiond.rpc.registry import ConnectionRegistry
from tests.rpchelpers import make_pair

U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"


def test_get_client_for_a_connected_cluster_returns_one_of_its_connections() -> None:
    reg = ConnectionRegistry(Clock())
    a, b = make_pair()[0], make_pair()[0]
    reg.add(U1, a)
    reg.add(U1, b)
    seen = {reg.getClientFor(U1).result.connection for _ in range(50)}
    assert seen == {a, b}
    assert reg.connection_count(U1) == 2


def test_get_client_for_an_unknown_cluster_fails_with_no_connections_available() -> None:
    reg = ConnectionRegistry(Clock())
    d = reg.getClientFor(U1)
    errs: list = []
    d.addErrback(errs.append)
    assert errs[0].check(NoConnectionsAvailable)
    assert errs[0].value.uuid == U1


def test_get_client_for_waits_for_a_connection_to_appear() -> None:
    clock = Clock()
    reg = ConnectionRegistry(clock)
    d = reg.getClientFor(U1, timeout=5)
    clock.advance(3)
    assert not d.called
    conn = make_pair()[0]
    reg.add(U1, conn)
    assert d.result.connection is conn
    assert not clock.getDelayedCalls()


def test_get_client_for_gives_up_after_the_timeout() -> None:
    clock = Clock()
    reg = ConnectionRegistry(clock)
    d = reg.getClientFor(U1, timeout=5)
    clock.advance(5)
    errs: list = []
    d.addErrback(errs.append)
    assert errs and errs[0].check(NoConnectionsAvailable)
    # A later connection does not resurrect the expired waiter.
    reg.add(U1, make_pair()[0])


def test_removed_connections_are_no_longer_handed_out() -> None:
    reg = ConnectionRegistry(Clock())
    a = make_pair()[0]
    reg.add(U1, a)
    reg.remove(U1, a)
    assert reg.connected_uuids() == []
    assert reg.getAllClients() == []


def test_get_all_clients_returns_one_client_per_cluster() -> None:
    reg = ConnectionRegistry(Clock())
    reg.add(U1, make_pair()[0])
    reg.add(U1, make_pair()[0])
    reg.add(U2, make_pair()[0])
    assert sorted(c.ident for c in reg.getAllClients()) == [U1, U2]
