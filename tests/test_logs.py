"""--log-format json: one JSON object per line, structured fields kept, secrets never written."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from typing import Any

import pytest_twisted
from hypothesis import given, strategies as st
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from outpost.logs import REDACTED, JSONLineObserver, event_as_dict
from tests.daemons import TWISTD, env, make_region, state_dir


def capture(emit: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    observer = JSONLineObserver(out)
    globalLogPublisher.addObserver(observer)
    try:
        emit(Logger(namespace="test.ns"))
    finally:
        globalLogPublisher.removeObserver(observer)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_event_is_one_line_with_its_structured_fields() -> None:
    [line] = capture(lambda log: log.info("Cluster {uuid} connected from {peer}", uuid="u-1", peer="10.0.0.1:5"))
    assert line["message"] == "Cluster u-1 connected from 10.0.0.1:5"
    assert line["uuid"] == "u-1" and line["peer"] == "10.0.0.1:5"
    assert line["level"] == "info" and line["namespace"] == "test.ns" and line["time"].endswith("+00:00")


def test_fields_named_like_secrets_are_redacted_whoever_logs_them() -> None:
    [line] = capture(lambda log: log.warn("oops {what}", what="x", secret_key="s3cr3t", api_token="t0k", data={"password": "p"}))
    text = json.dumps(line)
    assert "s3cr3t" not in text and "t0k" not in text and '"p"' not in text
    assert line["secret_key"] == REDACTED and line["data"]["password"] == REDACTED


def test_a_logged_failure_carries_its_traceback() -> None:
    def emit(log: Logger) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("Unhandled error, reference {reference}", Failure(), reference="h:1:Cmd:7")

    [line] = capture(emit)
    assert line["level"] == "critical" and line["reference"] == "h:1:Cmd:7"
    assert "ZeroDivisionError" in line["traceback"] and line["error"] == "division by zero"


@given(st.dictionaries(st.text(max_size=10).filter(lambda k: not k.startswith("log_")),
                       st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.builds(object)), max_size=6))
def test_any_event_becomes_valid_json(fields: dict[str, Any]) -> None:
    event = {"log_format": "event", "log_time": 0.0, "log_level": LogLevel.info, "log_namespace": "x", **fields}
    json.dumps(event_as_dict(event))


@pytest_twisted.ensureDeferred
async def test_regiond_logs_json_lines_under_twistd() -> None:
    base = state_dir()
    region = make_region(base)
    region.argv.insert(region.argv.index("regiond") + 1, "--log-format")
    region.argv.insert(region.argv.index("--log-format") + 1, "json")
    region.start()
    try:
        await region.wait_healthy()
    finally:
        await region.stop()
    lines = [json.loads(line) for line in region.log_text().splitlines() if line.strip()]
    ready = [line for line in lines if line["namespace"] == "regiond.service" and "api_url" in line]
    assert ready and ready[0]["api_url"].startswith("http://127.0.0.1:")
    secret = (base / "region" / "secret").read_text().strip()
    assert secret not in region.log_text()
    shutil.rmtree(base, ignore_errors=True)


def test_an_unknown_log_format_is_a_usage_error() -> None:
    result = subprocess.run([TWISTD, "regiond", "--log-format", "xml"],
                            env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--log-format must be one of text, json" in result.stdout + result.stderr
