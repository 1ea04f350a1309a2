"""
Every command a cluster may send the region, with Hypothesis-generated
arguments, over a real authenticated connection to a live region on its
own PostgreSQL: each is answered, or refused with an error the command
declares (INVALID_ARGUMENT above all), never UNHANDLED.  The RPC side of
"bad input gets a clear error" that tests/test_api_fuzz.py is for HTTP.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.protocols import amp

from rpc.protocol import RPCProtocol
from rpc.region import (
    GetRegionEndpoints,
    GetTrackedVolumeJobs,
    RegisterCluster,
    ReportEvent,
    ReportInfrastructureTask,
    ReportPowerOutcome,
    ReportVolumeJob,
    ReportVolumeState,
)
from tests.regionstack import RegionStack, region_stack  # noqa: F401
from tests.rpchelpers import any_text, calls, judge, json_values, words

CLUSTER = "7b0c6a52-2f4e-4d7e-9a51-3c1f0e2d4b6a"

#: Everything a cluster sends the region (Identify and Authenticate are the handshake's).
COMMANDS: list[type[amp.Command]] = [
    RegisterCluster, GetRegionEndpoints, ReportPowerOutcome, ReportEvent, ReportVolumeState, ReportVolumeJob,
    GetTrackedVolumeJobs, ReportInfrastructureTask,
]

text = st.one_of(words, words, any_text)
task_like = st.fixed_dictionaries({}, optional={
    "requestId": st.one_of(words, json_values), "infrastructureId": st.one_of(words, json_values),
    "status": st.one_of(words, json_values), "outputs": json_values,
    "failureDetails": st.one_of(json_values, st.fixed_dictionaries({"failureCode": words, "description": text})),
})
location_like = st.fixed_dictionaries({"name": st.one_of(words, json_values)}, optional={"type": st.one_of(words, json_values)})
structures = st.one_of(json_values, task_like, location_like, st.lists(st.one_of(words, json_values), max_size=4))
uuids = st.one_of(st.just(CLUSTER), st.uuids().map(str))


def _outcome(stack: RegionStack, proto: RPCProtocol, command: type[amp.Command], kwargs: dict[str, Any]) -> Any:
    """The response dict or the Failure, from the hypothesis thread."""

    def call() -> Deferred[Any]:
        d: Deferred[Any] = proto.call(command, timeout=10, **kwargs)
        # Boxed, since a Failure returned from an errback would go on as a failure.
        return d.addCallbacks(lambda answer: (answer,), lambda failure: (failure,))

    [outcome] = blockingCallFromThread(stack.registry.clock, call)
    return outcome


@pytest_twisted.ensureDeferred
async def test_generated_calls_from_a_cluster_are_answered_or_refused_with_a_declared_error(region_stack: RegionStack) -> None:
    proto = await region_stack.connect_cluster(CLUSTER, "site-1")
    seen: dict[str, set[str]] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(call=calls(COMMANDS, text, structures, uuids))
    def property_(call: tuple[type[amp.Command], dict[str, Any]]) -> None:
        command, kwargs = call
        result = _outcome(region_stack, proto, command, kwargs)
        judge(command, kwargs, result, seen)

    await deferToThread(property_)
    # Not only refusals: most commands were also taken, so the examples reached the work behind the check.
    answered = {name for name, outcomes in seen.items() if "answered" in outcomes}
    assert len(answered) >= 5, seen
    assert proto.connected, "no example cost the cluster its connection"
