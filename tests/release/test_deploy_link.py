"""The "Deploy with balena" button in the README and docs/deploy.md names this repository.

balena's docs (balena-io/docs pages/learn/deploy/deploy-with-balena-button.md) give the form
`[![balena deploy button](https://www.balena.io/deploy.svg)](https://dashboard.balena-cloud.com/deploy?repoUrl=<your-repo-url>)`
and recommend `repoUrl`: guessing the repository from the Referer header "may fail" on Firefox
and with some ad blockers. `defaultDeviceType` pre-selects the device type (else a Pi 4).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from helpers.release import REPO

BUTTON = re.compile(
    r"\[!\[[^\]]*\]\((?P<image>https://(?:www\.)?balena\.io/deploy\.(?:svg|png))\)\]\((?P<link>[^)\s]+)\)"
)


@pytest.mark.parametrize("doc", ["README.md", "docs/deploy.md"])
def test_the_deploy_button_names_the_repository(doc: str, balena_yml: dict[str, Any]) -> None:
    buttons = list(BUTTON.finditer((REPO / doc).read_text()))
    assert len(buttons) == 1, f"{doc} has one Deploy with balena button"
    link = urlsplit(buttons[0].group("link"))
    assert (link.scheme, link.netloc, link.path) == ("https", "dashboard.balena-cloud.com", "/deploy")
    query = parse_qs(link.query, strict_parsing=True)
    assert query["repoUrl"] == [balena_yml["assets"]["repository"]["data"]["url"]]
    assert query["defaultDeviceType"] == [balena_yml["data"]["defaultDeviceType"]]
    assert set(query) == {"repoUrl", "defaultDeviceType"}


def test_the_button_pattern_finds_a_button_without_repo_url() -> None:
    """The pattern itself: a bare button (as docs/deploy.md had) is found and has no repoUrl."""
    bare = "[![Deploy with balena](https://balena.io/deploy.svg)](https://dashboard.balena-cloud.com/deploy)"
    (button,) = BUTTON.finditer(bare)
    assert "repoUrl" not in parse_qs(urlsplit(button.group("link")).query)
