"""The README shows files the tests run: its copies must not drift."""

from __future__ import annotations

import re

from harness.live_server import PROJECT_ROOT


def fenced_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


def test_the_readme_shows_the_nginx_configuration_the_tests_run():
    readme = (PROJECT_ROOT / "README.md").read_text()
    config = (PROJECT_ROOT / "deploy" / "nginx.conf").read_text()

    assert fenced_blocks(readme, "nginx") == [config]
