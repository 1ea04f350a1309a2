"""
Mutual authentication: nothing but the handshake works until both sides
prove the secret; with several secrets a file, peers one rotation step apart
still authenticate, and a new connection uses the secrets as they are then.
"""

from __future__ import annotations

from itertools import product

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols import amp
from twisted.test import iosim

from outpost.secret import Secrets, fingerprint
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


# -- several secrets a file: rotation without dropping anyone ------------------
OLD, NEW, NEITHER = b"o" * 32, b"n" * 32, b"z" * 32
#: What a host's file holds before the rotation and after each of its three steps.
STEPS = {
    "before": Secrets.of(OLD),
    "added": Secrets.of(OLD, NEW),
    "promoted": Secrets.of(NEW, OLD),
    "retired": Secrets.of(NEW),
}
ORDER = list(STEPS)


@pytest.mark.parametrize("region_step, cluster_step", list(product(ORDER, ORDER)))
def test_peers_at_most_one_step_apart_authenticate_both_ways(region_step: str, cluster_step: str) -> None:
    """
    Each step is done on every host, in any order, before the next starts:
    so two hosts are never more than one step apart, and every such pair
    authenticates.  Two steps apart (a host skipped one) is refused.
    """
    region, cluster, pump, clock = make_pair(region_secret=STEPS[region_step], cluster_secret=STEPS[cluster_step])
    apart = abs(ORDER.index(region_step) - ORDER.index(cluster_step))
    if apart <= 1:
        assert region.peer_authenticated and cluster.peer_authenticated
        answered: list = []
        cluster.call(Ping).addCallback(answered.append)
        pump.flush()
        assert answered == [{}]
    else:
        assert not (region.peer_authenticated and cluster.peer_authenticated)
        assert not region.connected and not cluster.connected


@pytest.mark.parametrize("step", ORDER)
def test_a_peer_with_neither_secret_is_refused_at_every_step(step: str) -> None:
    recorder = Recorder()
    region, cluster, pump, clock = make_pair(region_locator=recorder, region_secret=STEPS[step], cluster_secret=NEITHER)
    d = cluster.call(RegisterCluster, uuid=UUID, name="a", version="1", capabilities=[])
    pump.flush()
    failures: list = []
    d.addErrback(failures.append)
    assert not region.peer_authenticated and not region.connected
    assert failures and recorder.registered == []


class Changing:
    """A secret source whose contents the test changes, as an operator edits the file."""

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self.reads = 0

    def current(self) -> Secrets:
        self.reads += 1
        return self.secrets


def test_the_source_is_read_for_each_new_connection_and_live_ones_stay_up() -> None:
    source = Changing(Secrets.of(OLD))
    clock = Clock()
    first_region, first_cluster, first_pump, _ = make_pair(region_secret=source, cluster_secret=Secrets.of(OLD), clock=clock)
    assert first_region.peer_authenticated and source.reads == 1
    # The region's file is rotated all the way while the first connection is up.
    source.secrets = Secrets.of(NEW)
    pings: list = []
    first_cluster.call(Ping).addCallback(pings.append)
    first_pump.flush()
    assert pings == [{}] and first_region.connected, "authentication happens at connect only"
    # A new connection uses the file as it is now: a cluster with only the old secret is refused...
    stale_region, stale_cluster, _, _ = make_pair(region_secret=source, cluster_secret=Secrets.of(OLD), clock=clock)
    assert not stale_region.connected and source.reads == 2
    # ...and one with the new secret gets in.
    new_region, new_cluster, _, _ = make_pair(region_secret=source, cluster_secret=Secrets.of(NEW), clock=clock)
    assert new_region.peer_authenticated and new_cluster.peer_authenticated


def _capture() -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    return events


def test_both_sides_log_what_went_wrong_with_fingerprints_never_secrets() -> None:
    """The region holds the new secret only; the cluster (which missed every step) holds the old."""
    events = _capture()
    try:
        # The cluster accepts what the region proves (it has both), the region refuses the cluster's proof.
        region, cluster, pump, clock = make_pair(region_secret=Secrets.of(NEW), cluster_secret=Secrets.of(OLD, NEW))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not region.connected and not cluster.connected
    warnings = [e for e in events if e.get("log_namespace") == "rpc.protocol"]
    refused = [e for e in warnings if "failed to prove the shared secret (this side accepts" in e["log_format"]]
    assert refused and refused[0]["fingerprints"] == fingerprint(NEW)
    hung_up = [e for e in warnings if "closed the connection after this side proved" in e["log_format"]]
    assert hung_up and hung_up[0]["prover"] == fingerprint(OLD)
    for event in events:
        text = repr(event)
        assert OLD.hex() not in text and NEW.hex() not in text and repr(OLD) not in text and repr(NEW) not in text


def test_a_peer_that_accepts_us_raises_no_suspicion_when_it_closes_later() -> None:
    events = _capture()
    try:
        region, cluster, pump, clock = make_pair(region_secret=Secrets.of(NEW, OLD), cluster_secret=Secrets.of(OLD, NEW))
        answered: list = []
        cluster.call(Ping).addCallback(answered.append)
        pump.flush()
        cluster.transport.loseConnection()
        pump.flush()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert answered == [{}] and not region.connected
    assert not [e for e in events if "closed the connection after" in e.get("log_format", "")]
