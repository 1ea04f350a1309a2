"""README.rst stays true to its promises: it renders, and it opens with the two commands."""

from __future__ import annotations

from pathlib import Path

import docutils.core

README = Path(__file__).resolve().parent.parent / "README.rst"


def test_readme_renders_without_errors_or_warnings() -> None:
    docutils.core.publish_string(
        README.read_text(), writer="null", settings_overrides={"report_level": 2, "halt_level": 2}
    )


def test_readme_opens_with_make_run_and_make_test() -> None:
    head = "\n".join(README.read_text().splitlines()[:40])
    assert "make run" in head and "make test" in head


def test_every_admin_subcommand_is_documented() -> None:
    from outpost.cli import parser

    text = README.read_text()
    top = parser()
    commands = next(a for a in top._actions if a.dest == "command").choices
    for name in commands:
        assert f"outpost {name}" in text, name
