"""
The authenticated AMP protocol both daemons speak.

* Mutual challenge/response on a shared secret before anything else: until
  the peer has proved the secret only `Identify` and `Authenticate` are
  answered; any other command is refused and the connection dropped.  A peer
  that has not proved the secret within `auth_timeout` seconds is dropped.
* The secrets come from a `SecretSource` (`outpost.secret.SecretFile`), read
  once per connection as it is made: the *prover* answers the peer's
  challenge, and an answer made with *any accepted* secret is good.  So the
  secret file can be rotated under running daemons: connections already up
  stay up (authentication only happens at connect) and new ones use what the
  file holds then.
* Calls have a timeout (default 120 s, overridable per call) and fail at once
  with `ConnectionClosed` when the connection goes.
* An unexpected exception in a responder is logged under a reference
  ``host:pid:command:ask`` and answered as ``UNHANDLED`` with that reference;
  the connection stays up.
"""

from __future__ import annotations

import hmac
import os
import socket
from hashlib import sha256
from typing import Any, Callable, Protocol as TypingProtocol

import attrs
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from outpost.secret import Secrets
from rpc import errors
from rpc.common import PRE_AUTH_COMMANDS, Authenticate, Identify, Ping

__all__ = [
    "CLUSTER",
    "REGION",
    "RPCProtocol",
    "RPCFactory",
    "answer_challenge",
    "SecretKeys",
    "SecretSource",
    "DEFAULT_CALL_TIMEOUT",
    "AUTH_TIMEOUT",
]

log = Logger()

REGION = "region"
CLUSTER = "cluster"
_PEER_ROLE = {REGION: CLUSTER, CLUSTER: REGION}

DEFAULT_CALL_TIMEOUT = 120.0
AUTH_TIMEOUT = 10.0
CHALLENGE_BYTES = 32
SALT_BYTES = 16
_HOST = socket.gethostname()


def answer_challenge(secret: bytes, challenge: bytes, salt: bytes, role: str) -> bytes:
    """The proof that the side playing `role` knows `secret`."""
    return hmac.new(secret, challenge + salt + role.encode("ascii"), sha256).digest()


class SecretKeys(TypingProtocol):
    """The secrets one connection uses (`outpost.secret.Secrets`)."""

    @property
    def prover(self) -> bytes: ...

    @property
    def accepted(self) -> tuple[bytes, ...]: ...

    @property
    def fingerprints(self) -> tuple[str, ...]: ...


class SecretSource(TypingProtocol):
    """Where the secrets come from, asked once per connection (`outpost.secret.SecretFile`, or fixed `Secrets`)."""

    def current(self) -> SecretKeys: ...


def _source(secret: bytes | SecretSource) -> SecretSource:
    return Secrets.of(secret) if isinstance(secret, bytes) else secret


class _Handshake(amp.CommandLocator):
    """Responders every connection has, whatever its role."""

    def __init__(self, proto: "RPCProtocol") -> None:
        self._proto = proto

    @Identify.responder
    def identify(self) -> dict[str, str]:
        return {"ident": self._proto.ident, "role": self._proto.role}

    @Authenticate.responder
    def authenticate(self, challenge: bytes) -> dict[str, bytes]:
        if not CHALLENGE_BYTES // 2 <= len(challenge) <= 1024:
            raise errors.InvalidArgument("challenge must be 16 to 1024 bytes")
        return self._proto.prove(challenge)

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}


class RPCProtocol(amp.AMP):
    """
    One authenticated AMP connection.

    `locator` answers the role's own commands; the handshake and `Ping` are
    answered here.
    """

    #: Set by `makeConnection` and never unset.  RPC runs over TCP (or TLS
    #: over it), hence `abortConnection`.
    transport: ITCPTransport | None

    def __init__(
        self,
        *,
        secret: bytes | SecretSource,
        role: str,
        clock: IReactorTime,
        ident: str = "",
        locator: amp.CommandLocator | None = None,
        auth_timeout: float = AUTH_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        metrics: CallMetrics | None = None,
    ) -> None:
        if role not in _PEER_ROLE:
            raise ValueError(f"role must be {REGION!r} or {CLUSTER!r}")
        # Twisted's AMP.__init__ is unannotated.
        super().__init__()  # type: ignore[no-untyped-call]
        self._secret_source = _source(secret)
        #: This connection's secrets, read from the source when it is made.
        self._keys: SecretKeys | None = None
        #: We answered the peer's challenge / the peer has shown it accepted that answer
        #: (it sent us a command, or answered one of ours, which it does only after checking us).
        self._proved = False
        self._peer_accepted_us = False
        self.role = role
        self.peer_role = _PEER_ROLE[role]
        self.clock = clock
        self.ident = ident
        self.domain_locator = locator
        self.auth_timeout = auth_timeout
        self.call_timeout = call_timeout
        #: Records calls made and answered (`outpost.metrics.RPCMetrics`); None records nothing.
        self.metrics = metrics
        self.peer_authenticated = False
        self.connected = False
        #: "host:port" of the other end, kept after the connection goes for logs.
        self.peer_name = "?"
        self._handshake: amp.CommandLocator = _Handshake(self)
        self._auth_timer: Any = None
        self._auth_waiters: list[Deferred[RPCProtocol]] = []
        self._auth_outcome: Failure | None = None
        self._close_waiters: list[Deferred[None]] = []
        #: Called with this protocol once it is connected and has sent its challenge.
        self.on_connect: Callable[[RPCProtocol], None] | None = None

    # -- connection life ---------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        # Twisted's BaseProtocol.connectionMade is unannotated.
        super().connectionMade()  # type: ignore[no-untyped-call]
        self.connected = True
        peer = self._live_transport.getPeer()
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        self.peer_name = f"{host}:{port}" if host is not None else str(peer)
        try:
            self._keys = self._secret_source.current()
        except Exception as e:
            log.error("Dropping {peer}: no RPC secret to use: {error}", peer=self.peer_name, error=str(e))
            self._settle_auth(Failure(errors.AuthenticationFailed("no secret to authenticate with")))
            self._live_transport.abortConnection()
            return
        self._auth_timer = self.clock.callLater(self.auth_timeout, self._auth_timed_out)
        challenge = os.urandom(CHALLENGE_BYTES)
        # Twisted's BoxDispatcher.callRemote is unannotated.
        d: Deferred[dict[str, bytes]] = self.callRemote(  # type: ignore[no-untyped-call]
            Authenticate, challenge=challenge
        )
        d.addCallbacks(self._check_proof, self._proof_failed, callbackArgs=(challenge,))
        if self.on_connect is not None:
            self.on_connect(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self.connected = False
        self._cancel_auth_timer()
        if self._proved and self.peer_authenticated and not self._peer_accepted_us:
            # The peer checked our answer and hung up before using the
            # connection: almost always a secret it does not accept.
            log.warn(
                "{peer} closed the connection after this side proved the secret {prover}: "
                "it probably does not accept that secret (compare `outpost secret status` on both hosts)",
                peer=self.peer_name,
                prover=self.keys.fingerprints[0],
            )
        self._settle_auth(Failure(errors.ConnectionClosed(f"connection to {self.peer_name} closed")))
        # Twisted's AMP.connectionLost is unannotated.
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_closed(self) -> "Deferred[None]":
        """Fires once the connection has gone (at once if it already has)."""
        if not self.connected and self.transport is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        return d

    @property
    def _live_transport(self) -> ITCPTransport:
        """`transport`, for code that only runs once the connection was made."""
        transport = self.transport
        assert transport is not None, "the connection has not been made yet"
        return transport

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        log.warn(
            "Dropping {peer}: not authenticated within {timeout}s",
            peer=self.peer_name,
            timeout=self.auth_timeout,
        )
        self._settle_auth(Failure(errors.AuthenticationFailed("authentication timed out")))
        self._live_transport.abortConnection()

    @property
    def keys(self) -> SecretKeys:
        """The secrets this connection uses (read from the source once, when first needed)."""
        if self._keys is None:
            self._keys = self._secret_source.current()
        return self._keys

    def _check_proof(self, response: dict[str, bytes], challenge: bytes) -> None:
        digest, salt = response["digest"], response["salt"]
        proved = False
        for secret in self.keys.accepted:
            # Every accepted secret is tried (no early exit), each in constant time.
            proved |= hmac.compare_digest(answer_challenge(secret, challenge, salt, self.peer_role), digest)
        if proved:
            self.peer_authenticated = True
            self._cancel_auth_timer()
            self._settle_auth(None)
        else:
            log.warn(
                "Dropping {peer}: it failed to prove the shared secret (this side accepts {fingerprints})",
                peer=self.peer_name,
                fingerprints=", ".join(self.keys.fingerprints),
            )
            self._settle_auth(Failure(errors.AuthenticationFailed("peer failed to prove the secret")))
            self._live_transport.loseConnection()

    def _proof_failed(self, failure: Failure) -> None:
        if self.connected:
            log.warn(
                "Dropping {peer}: its Authenticate answer failed: {error}",
                peer=self.peer_name,
                error=failure.getErrorMessage(),
            )
            self._live_transport.loseConnection()
        self._settle_auth(Failure(errors.AuthenticationFailed(failure.getErrorMessage())))

    def _settle_auth(self, outcome: Failure | None) -> None:
        """Tell the waiters how authentication ended (None: the peer proved it)."""
        if self._auth_outcome is not None or (outcome is not None and self.peer_authenticated):
            return  # settled already
        self._auth_outcome = outcome
        waiters, self._auth_waiters = self._auth_waiters, []
        for waiter in waiters:
            if outcome is None:
                waiter.callback(self)
            else:
                waiter.errback(outcome)

    def prove(self, challenge: bytes) -> dict[str, bytes]:
        """Our answer to the peer's challenge, with a fresh salt."""
        salt = os.urandom(SALT_BYTES)
        self._proved = True
        return {"digest": answer_challenge(self.keys.prover, challenge, salt, self.role), "salt": salt}

    def when_authenticated(self) -> "Deferred[RPCProtocol]":
        """Fires with this protocol once the peer has proved the secret."""
        if self.peer_authenticated:
            return succeed(self)
        if self._auth_outcome is not None:
            return fail(self._auth_outcome)
        d: Deferred[RPCProtocol] = Deferred()
        self._auth_waiters.append(d)
        return d

    # -- receiving ---------------------------------------------------------

    def locateResponder(self, name: bytes) -> Callable[[amp.AmpBox], Deferred[amp.AmpBox]] | None:  # noqa: N802
        responder: Callable[[amp.AmpBox], Deferred[amp.AmpBox]] | None = self._handshake.locateResponder(name)
        if responder is None and self.domain_locator is not None:
            responder = self.domain_locator.locateResponder(name)
        return responder

    def dispatchCommand(self, box: amp.AmpBox) -> Deferred[amp.AmpBox]:  # noqa: N802
        name = box[amp.COMMAND]
        if not self.peer_authenticated and name not in PRE_AUTH_COMMANDS:
            log.warn(
                "Refused {command} from unauthenticated {peer}; dropping it",
                command=name.decode("ascii", "replace"),
                peer=self.peer_name,
            )
            if amp.ASK not in box:
                self._live_transport.loseConnection()
            # Fatal: AMP answers with a QuitBox, which closes the connection.
            return fail(amp.RemoteAmpError(b"NOT_AUTHENTICATED", "authenticate first", fatal=True))
        if name not in PRE_AUTH_COMMANDS:
            self._peer_accepted_us = True
        responder = self.locateResponder(name)
        if responder is None:
            # Twisted's BoxDispatcher.dispatchCommand is unannotated.
            unknown: Deferred[amp.AmpBox] = super().dispatchCommand(box)  # type: ignore[no-untyped-call]
            return unknown
        stats = None if self.metrics is None else self.metrics.incoming(name)
        started = 0.0 if stats is None else self.clock.seconds()
        try:
            # AMP parses the arguments synchronously before calling the
            # responder, so an exception here is the caller's bad input.
            d = responder(box)
        except Exception as e:
            if stats is not None:
                stats.observe("invalid", self.clock.seconds() - started)
            return fail(amp.RemoteAmpError(b"INVALID_ARGUMENT", f"{name.decode('ascii', 'replace')}: {e}"))
        if stats is None:
            return d.addErrback(self._unhandled, box)
        return d.addBoth(self._answered, box, stats, started)

    def _answered(self, result: Any, box: amp.AmpBox, stats: CommandStats, started: float) -> Any:
        """Record how a call we answered ended (one callback, in place of `_unhandled`'s errback)."""
        if isinstance(result, Failure):
            stats.observe("error" if result.check(amp.RemoteAmpError) else "unhandled", self.clock.seconds() - started)
            return self._unhandled(result, box)
        stats.observe("ok", self.clock.seconds() - started)
        return result

    def _unhandled(self, failure: Failure, box: amp.AmpBox) -> Failure:
        if failure.check(amp.RemoteAmpError):
            return failure
        command = box[amp.COMMAND].decode("ascii", "replace")
        ask = box.get(amp.ASK, b"-").decode("ascii", "replace")
        reference = f"{_HOST}:{os.getpid()}:{command}:{ask}"
        if failure.check(errors.Transient):
            log.warn(
                "Responder for {command} from {peer} cannot answer now ({error}), reference {reference}",
                command=command,
                peer=self.peer_name,
                error=failure.getErrorMessage(),
                reference=reference,
            )
            return Failure(amp.RemoteAmpError(amp.UNHANDLED_ERROR_CODE, f"reference {reference}"))
        log.failure(
            "Unhandled error in responder for {command} from {peer}, reference {reference}",
            failure,
            command=command,
            peer=self.peer_name,
            reference=reference,
        )
        return Failure(amp.RemoteAmpError(amp.UNHANDLED_ERROR_CODE, f"reference {reference}"))

    # -- calling -----------------------------------------------------------

    def call(self, command: type[amp.Command], timeout: float | None = None, **kwargs: Any) -> Deferred[dict[str, Any]]:
        """
        Call `command` on the peer; fires with its response dict.

        Fails with `CallTimedOut` after `timeout` seconds (default
        `call_timeout`; 0 or less means no timeout), and with
        `ConnectionClosed` as soon as the connection goes.
        """
        # Labels are resolved once per command (`RPCMetrics.outgoing` caches them).
        stats = None if self.metrics is None else self.metrics.outgoing(command)
        if not self.peer_authenticated and command.commandName not in PRE_AUTH_COMMANDS:
            if stats is not None:
                stats.observe("unavailable", 0.0)
            return fail(errors.NotAuthenticated(f"{self.peer_name} has not authenticated"))
        if not self.connected:
            if stats is not None:
                stats.observe("unavailable", 0.0)
            return fail(errors.ConnectionClosed(f"connection to {self.peer_name} is closed"))
        timeout = self.call_timeout if timeout is None else timeout
        started = 0.0 if stats is None else self.clock.seconds()
        try:
            # Twisted's BoxDispatcher.callRemote is unannotated.
            inner: Deferred[dict[str, Any]] = self.callRemote(command, **kwargs)  # type: ignore[no-untyped-call]
        except Exception as e:  # arguments that do not serialise
            if stats is not None:
                stats.observe("invalid", 0.0)
            name = command.commandName.decode("ascii")
            return fail(errors.InvalidArgument(f"{name}: cannot send arguments: {e}"))
        # The timeout is one DelayedCall of our own rather than
        # Deferred.addTimeout, which costs two extra callbacks, three closures
        # and a cancel-then-convert round per call (bench/rpc.py: about half
        # of this method's overhead over bare callRemote with 100 in flight).
        # Same behaviour: the timer goes when the call is answered or
        # cancelled, and firing it fails the call with CallTimedOut.
        timer: Any = None

        def stop_timer(_: Any = None) -> None:
            if timer is not None and timer.active():
                timer.cancel()

        def cancelled(_: Any) -> None:
            stop_timer()
            if stats is not None:
                stats.observe("cancelled", self.clock.seconds() - started)

        def expire() -> None:
            if not outer.called:
                if stats is not None:
                    stats.observe("timeout", self.clock.seconds() - started)
                outer.errback(Failure(errors.CallTimedOut(command.commandName.decode("ascii"), timeout)))

        outer: Deferred[dict[str, Any]] = Deferred(cancelled)

        def relay(result: Any) -> None:
            stop_timer()
            # Late answers to abandoned (timed out or cancelled) calls are dropped.
            if not outer.called:
                if not self._peer_accepted_us and command.commandName not in PRE_AUTH_COMMANDS and not (
                    isinstance(result, Failure) and result.check(errors.NotAuthenticated, ierror.ConnectionDone,
                                                                 ierror.ConnectionLost, amp.ProtocolSwitched)
                ):
                    self._peer_accepted_us = True  # it answered: it checked us and let us in
                if isinstance(result, Failure):
                    failure = _translate(result)
                    if stats is not None:
                        outcome = "unavailable" if failure.check(errors.ConnectionClosed) else "error"
                        stats.observe(outcome, self.clock.seconds() - started)
                    outer.errback(failure)
                else:
                    if stats is not None:
                        stats.observe("ok", self.clock.seconds() - started)
                    outer.callback(result)

        inner.addBoth(relay)
        if timeout > 0 and not outer.called:
            timer = self.clock.callLater(timeout, expire)
        return outer


def _translate(failure: Failure) -> Failure:
    """Turn AMP's and Twisted's transport errors into our own."""
    if isinstance(failure.value, amp.UnhandledCommand):
        description = failure.value.args[1] if len(failure.value.args) > 1 else str(failure.value)
        if isinstance(description, str) and description.startswith("reference "):
            return Failure(errors.RemoteUnhandledError(description[len("reference "):]))
        return Failure(errors.UnknownCommand(str(description)))
    if failure.check(ierror.ConnectionDone, ierror.ConnectionLost, amp.ProtocolSwitched):
        return Failure(errors.ConnectionClosed(f"connection closed: {failure.getErrorMessage()}"))
    return failure


class CommandStats(TypingProtocol):
    """One command's counters (`outpost.metrics.CommandStats`)."""

    def observe(self, outcome: str, seconds: float) -> None: ...


class CallMetrics(TypingProtocol):
    """What a protocol records calls into (`outpost.metrics.RPCMetrics`)."""

    def outgoing(self, command: type[amp.Command]) -> CommandStats: ...

    def incoming(self, name: bytes) -> CommandStats: ...


class LocatorFactory(TypingProtocol):
    def __call__(self, proto: RPCProtocol, /) -> amp.CommandLocator: ...


@attrs.define(eq=False)
class RPCFactory(Factory):
    """
    Builds `RPCProtocol`s for one role.

    `locator_factory` makes the role's responders for each new connection
    (they usually need to know which connection they serve).
    """

    #: Never in a repr: factories are logged when they start.  A `SecretSource`
    #: (the secret file) is read again for every connection.
    secret: bytes | SecretSource = attrs.field(repr=False)
    role: str
    clock: IReactorTime = attrs.field(repr=False)
    ident: str = ""
    locator_factory: LocatorFactory | None = None
    auth_timeout: float = AUTH_TIMEOUT
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    on_connect: Callable[[RPCProtocol], None] | None = None
    metrics: CallMetrics | None = None

    noisy = False

    def buildProtocol(self, addr: Any) -> RPCProtocol:  # noqa: N802
        proto = RPCProtocol(
            secret=self.secret,
            role=self.role,
            clock=self.clock,
            ident=self.ident,
            auth_timeout=self.auth_timeout,
            call_timeout=self.call_timeout,
            metrics=self.metrics,
        )
        proto.factory = self
        proto.on_connect = self.on_connect
        if self.locator_factory is not None:
            proto.domain_locator = self.locator_factory(proto)
        return proto
