"""The images' own users (scripts/image-users.tsv), as the test machine has them.

The release and end-to-end tests run each entrypoint as root and let it drop to its image's user:
same uid and gid as the image. scripts/setup.sh (as root) creates them; a test that needs them
calls `require()` and skips, saying why, where they are missing or the tests do not run as root.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "scripts" / "image-users.tsv"


@dataclass(frozen=True, slots=True)
class ImageUser:
    """One image's service user and the name the test machine gives its uid."""

    service: str
    name: str
    uid: int
    gid: int
    group: str
    supplementary: tuple[str, ...]
    #: the name on the test machine ("" where the tests step down by number only)
    test_name: str
    source: str


def image_users() -> dict[str, ImageUser]:
    """Every row of the table, by compose service."""
    users = {}
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        service, name, uid, gid, group, extra, test_name, source = line.split(maxsplit=7)
        users[service] = ImageUser(
            service=service,
            name=name,
            uid=int(uid),
            gid=int(gid),
            group=group,
            supplementary=() if extra == "-" else tuple(extra.split(",")),
            test_name="" if test_name == "-" else test_name,
            source=source,
        )
    return users


def require(*services: str) -> dict[str, ImageUser]:
    """The users of `services`, after checking this machine has them with the image's numbers;
    skips the test where it cannot run an entrypoint as root dropping to them."""
    if os.geteuid() != 0:
        pytest.skip("the entrypoints run as root and drop to their images' users (as in the containers)")
    users = image_users()
    for service in services:
        user = users[service]
        if not user.test_name:
            continue
        try:
            entry = pwd.getpwnam(user.test_name)
        except KeyError:
            pytest.skip(f"no user {user.test_name} ({service} image's {user.uid}:{user.gid}): run make setup as root")
        assert (entry.pw_uid, entry.pw_gid) == (user.uid, user.gid), f"{user.test_name} differs from {service}'s"
        for group in user.supplementary:
            assert user.test_name in grp.getgrnam(group).gr_mem, f"{user.test_name} is not in {group}"
    return {service: users[service] for service in services}
