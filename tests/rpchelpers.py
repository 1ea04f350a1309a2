"""
Helpers for tests of the RPC layer: connected pairs in memory, and what
the RPC fuzz tests (tests/test_rpc_*_fuzz.py) generate and require.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim

from rpc.errors import RemoteUnhandledError
from rpc.protocol import CLUSTER, REGION, RPCProtocol

SECRET = b"s" * 32


def make_pair(
    region_locator: amp.CommandLocator | None = None,
    cluster_locator: amp.CommandLocator | None = None,
    region_secret: bytes = SECRET,
    cluster_secret: bytes = SECRET,
    clock: Clock | None = None,
    **kwargs: Any,
) -> tuple[RPCProtocol, RPCProtocol, iosim.IOPump, Clock]:
    """A region (server) and cluster (client) protocol joined by an in-memory pump."""
    clock = clock or Clock()
    region = RPCProtocol(secret=region_secret, role=REGION, clock=clock, ident="region-1", locator=region_locator, **kwargs)
    cluster = RPCProtocol(secret=cluster_secret, role=CLUSTER, clock=clock, ident="cluster-1", locator=cluster_locator, **kwargs)
    server, client, pump = iosim.connectedServerAndClient(lambda: region, lambda: cluster, greet=False, clock=clock)
    pump.flush()
    return region, cluster, pump, clock


# -- RPC fuzzing ------------------------------------------------------------------------

# AMP carries text as UTF-8, which cannot hold a lone surrogate: the sender could not even encode one.
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
#: Words the responders look for, so that examples get past the first check as well as fail it.
words = st.sampled_from([
    "", "on", "off", "cycle", "deploy", "release", "power", "ok", "failed", "timeout", "interrupted", "m1", "job-1", "disk-1",
    "Allocated", "Attached", "Mounted", "prepare", "cleanup", "create", "delete", "COMPLETE", "FAILED", "IN_PROGRESS",
    "machine.power", "volume.job", "req-1", "inf-1", "site-1", "\x00", "a" * 300,
])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.one_of(words, words, any_text),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(words, any_text), inner, max_size=5),
    max_leaves=15,
)


def calls(
    commands: list[type[amp.Command]],
    text: st.SearchStrategy[str],
    structures: st.SearchStrategy[Any],
    uuids: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[tuple[type[amp.Command], dict[str, Any]]]:
    """One of `commands` with every argument drawn by its AMP type."""
    from rpc.arguments import UUID, Structure

    def strategy(argument: amp.Argument) -> st.SearchStrategy[Any]:
        if isinstance(argument, UUID) and uuids is not None:
            return uuids
        if isinstance(argument, Structure):
            return st.none() | structures if argument.optional else structures
        if isinstance(argument, amp.Boolean):
            return st.booleans()
        if isinstance(argument, amp.Unicode):
            return text
        raise AssertionError(f"no strategy for {type(argument).__name__}: add one")

    @st.composite
    def call(draw: Any) -> tuple[type[amp.Command], dict[str, Any]]:
        command = draw(st.sampled_from(commands))
        return command, {name.decode(): draw(strategy(argument)) for name, argument in command.arguments}

    return call()


def judge(command: type[amp.Command], kwargs: dict[str, Any], result: Any, seen: dict[str, set[str]]) -> None:
    """
    `result` (a response dict or a Failure) is an answer or an error
    `command` declares, with a message: never UNHANDLED.  Notes the outcome
    in `seen` (command name -> "answered" or error class names).
    """
    name = command.__name__
    if isinstance(result, Failure):
        assert not result.check(RemoteUnhandledError, amp.RemoteAmpError), f"{name}({kwargs!r}): {result.value!r}"
        assert result.check(*command.allErrors), f"{name}({kwargs!r}): undeclared {result.value!r}"
        assert str(result.value), f"{name}: an error without a message"
        seen.setdefault(name, set()).add(type(result.value).__name__)
    else:
        assert isinstance(result, dict), f"{name}({kwargs!r}) answered {result!r}"
        seen.setdefault(name, set()).add("answered")
