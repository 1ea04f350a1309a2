"""Mutual authentication: nothing but the handshake works until both sides prove the secret."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.test import iosim

from rpc import errors
from rpc.common import Authenticate, Identify, Ping
from rpc.protocol import CLUSTER, REGION, RPCProtocol, answer_challenge
from rpc.region import RegisterCluster
from tests.rpchelpers import SECRET, make_pair


class Recorder(amp.CommandLocator):
    """A region locator that records every registration it executes."""

    def __init__(self) -> None:
        self.registered: list[str] = []

    @RegisterCluster.responder
    def register(self, uuid: str, name: str, version: str, capabilities: object) -> dict:
        self.registered.append(uuid)
        return {}


UUID = "9d2f1c4e-3b5a-4c6d-8e7f-0a1b2c3d4e5f"


def test_matching_secrets_authenticate_both_sides_and_commands_work() -> None:
    recorder = Recorder()
    region, cluster, pump, clock = make_pair(region_locator=recorder)
    assert region.peer_authenticated and cluster.peer_authenticated
    d = cluster.call(RegisterCluster, uuid=UUID, name="a", version="1", capabilities=[])
    pump.flush()
    assert d.called and recorder.registered == [UUID]


def test_wrong_secret_gets_nothing_done_and_is_dropped() -> None:
    recorder = Recorder()
    region, cluster, pump, clock = make_pair(region_locator=recorder, cluster_secret=b"x" * 32)
    assert not region.peer_authenticated
    assert not cluster.peer_authenticated
    # Both sides dropped the connection after the failed proof.
    assert not region.connected and not cluster.connected
    d = cluster.call(RegisterCluster, uuid=UUID, name="a", version="1", capabilities=[])
    pump.flush()
    failure = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(errors.NotAuthenticated, errors.ConnectionClosed)
    assert recorder.registered == []


class SkipsAuth(amp.AMP):
    """A hostile client: never answers Authenticate, calls real commands straight away."""

    @Authenticate.responder
    def never_answer(self, challenge: bytes) -> Deferred:
        return Deferred()


def test_peer_that_skips_authentication_is_refused_and_dropped() -> None:
    clock = Clock()
    recorder = Recorder()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock, locator=recorder)
    hostile = SkipsAuth()
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: hostile, greet=False, clock=clock)
    results: list = []
    hostile.callRemote(RegisterCluster, uuid=UUID, name="evil", version="1", capabilities=[]).addBoth(results.append)
    pump.flush()
    assert recorder.registered == []
    assert results and results[0].check(errors.NotAuthenticated)
    assert not region.connected


def test_peer_that_sends_an_unanswered_command_before_auth_is_dropped() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock)
    hostile = SkipsAuth()
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: hostile, greet=False, clock=clock)
    hostile.callRemote(Ping)  # requiresAnswer is true; also try a raw box without _ask
    hostile.boxSender.sendBox(amp.AmpBox(_command=b"Ping"))
    pump.flush()
    assert not region.connected


def test_identify_is_answered_before_authentication() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock, ident="r1")
    hostile = SkipsAuth()
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: hostile, greet=False, clock=clock)
    answers: list = []
    hostile.callRemote(Identify).addBoth(answers.append)
    pump.flush()
    assert answers == [{"ident": "r1", "role": "region"}]
    assert region.connected


def test_idle_unauthenticated_peer_is_dropped_after_ten_seconds() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock)
    silent = SkipsAuth()  # connects, then says nothing
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: silent, greet=False, clock=clock)
    pump.flush()
    clock.advance(9.9)
    pump.flush()
    assert region.connected
    clock.advance(0.2)
    pump.flush()
    assert not region.connected


def test_authenticated_connection_is_not_dropped_by_the_auth_timer() -> None:
    region, cluster, pump, clock = make_pair()
    clock.advance(60)
    pump.flush()
    assert region.connected and cluster.connected


def test_reflected_region_proof_does_not_authenticate_as_cluster() -> None:
    """A peer cannot make a region prove itself and replay that proof as a cluster."""
    challenge, salt = b"c" * 32, b"s" * 16
    assert answer_challenge(SECRET, challenge, salt, REGION) != answer_challenge(SECRET, challenge, salt, CLUSTER)


def test_authenticate_rejects_silly_challenges() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock)
    hostile = SkipsAuth()
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: hostile, greet=False, clock=clock)
    results: list = []
    hostile.callRemote(Authenticate, challenge=b"").addBoth(results.append)
    pump.flush()
    assert results[0].check(errors.InvalidArgument)


def test_when_authenticated_fires_for_waiters_and_late_askers() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock)
    cluster = RPCProtocol(secret=SECRET, role=CLUSTER, clock=clock)
    early = region.when_authenticated()
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: cluster, greet=False, clock=clock)
    pump.flush()
    assert early.result is region
    late: list = []
    cluster.when_authenticated().addCallback(late.append)
    assert late == [cluster]


def test_when_authenticated_fails_on_wrong_secret() -> None:
    region, cluster, pump, clock = make_pair(cluster_secret=b"y" * 32)
    failures: list = []
    region.when_authenticated().addErrback(failures.append)
    assert failures and failures[0].check(errors.AuthenticationFailed)


def test_peer_that_cannot_answer_authenticate_is_dropped_at_once() -> None:
    clock = Clock()
    region = RPCProtocol(secret=SECRET, role=REGION, clock=clock)
    plain = amp.AMP()  # answers Authenticate with "unhandled command"
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: plain, greet=False, clock=clock)
    pump.flush()
    assert not region.connected
