"""Async job polling, deterministic: the client and the simulator's jobs share one task.Clock (in-memory HTTP)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from clusterd.cloudstack import CloudStackJobFailed, CloudStackJobTimeout, PollPolicy
from tests.cloudstackhelpers import clocked


def polls(sim: Any) -> int:
    return sum(1 for command, _ in sim.request_log if command == "queryAsyncJobResult")


class JobPollingTests(SynchronousTestCase):
    def test_a_job_is_polled_with_backoff_until_it_ends(self) -> None:
        """Waits 0.5, 1, 2, …: polls at 0.5 s and 1.5 s find a 3 s job pending, the one at 3.5 s finds it done."""
        sim, clock, client = clocked(job_duration=3.0)
        d = Deferred.fromCoroutine(client.create_volume("v", sim.zone.id, sim.offering("Small").id))
        clock.advance(0.5)
        clock.advance(1.0)
        clock.advance(1.9)
        self.assertNoResult(d)
        self.assertEqual(polls(sim), 2)
        clock.advance(0.1)
        volume = self.successResultOf(d)
        self.assertEqual((volume["name"], volume["size"], polls(sim)), ("v", 5 * 1024**3, 3))
        self.assertEqual(clock.seconds(), 3.5)

    def test_poll_waits_are_capped(self) -> None:
        self.assertEqual([d for d, _ in zip(PollPolicy().delays(), range(7))], [0.5, 1, 2, 4, 5, 5, 5])

    def test_a_stuck_job_times_out_after_job_timeout_on_the_clock(self) -> None:
        sim, clock, client = clocked(job_duration=1.0, job_timeout=60.0)
        sim.set_faults(stuck_jobs=["*"])
        d = Deferred.fromCoroutine(client.create_volume("v", sim.zone.id, sim.offering("Small").id))
        clock.pump([1.0] * 59)
        self.assertNoResult(d)
        clock.pump([1.0] * 2)
        failure = self.failureResultOf(d, CloudStackJobTimeout)
        self.assertEqual(failure.value.timeout, 60.0)
        self.assertLessEqual(polls(sim), 60 // 5 + 5)

    def test_a_failed_job_undoes_the_volume_it_allocated(self) -> None:
        sim, clock, client = clocked(job_duration=1.0)
        sim.set_faults(fail_jobs=["createVolume"], job_error=[530, "storage pool offline"])
        d = Deferred.fromCoroutine(client.create_volume("v", sim.zone.id, sim.offering("Small").id))
        clock.pump([0.5] * 4)
        failure = self.failureResultOf(d, CloudStackJobFailed)
        self.assertEqual((failure.value.jobresultcode, failure.value.errortext), (530, "storage pool offline"))
        self.assertEqual(sim.data_volumes(), [])

    def test_tags_are_added_after_create_and_a_tagging_failure_deletes_the_volume(self) -> None:
        sim, clock, client = clocked(job_duration=1.0)
        sim.set_faults(fail_jobs=["createTags"])
        d = Deferred.fromCoroutine(client.create_volume("v", sim.zone.id, sim.offering("Small").id, tags={"job": "7"}))
        clock.pump([0.5] * 10)
        self.failureResultOf(d, CloudStackJobFailed)
        self.assertEqual(sim.data_volumes(), [])
        commands = [command for command, _ in sim.request_log if command != "queryAsyncJobResult"]
        self.assertEqual(commands, ["createVolume", "createTags", "deleteVolume"])
