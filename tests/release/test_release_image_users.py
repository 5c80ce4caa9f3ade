"""The images' users, pinned (issue 24): scripts/image-users.tsv is what test machines create
(scripts/setup.sh) and what the release tests drop to; it must say what the images do. Our own
images are read from their Dockerfiles; users an upstream base image makes were read from that
image's Dockerfile for the tag named in the table (its source column), so a Dockerfile that moves
to another tag fails here until they are read again."""

from __future__ import annotations

import re

from helpers.image_users import image_users
from helpers.release import REPO, image_environment

USERS = image_users()
DOCKERFILES = {
    "meter-bridge": REPO / "services" / "meter-bridge" / "Dockerfile",
    "zigbee2mqtt": REPO / "services" / "zigbee2mqtt" / "Dockerfile",
    "mqtt": REPO / "services" / "mosquitto" / "Dockerfile",
    "nginx": REPO / "nginx" / "Dockerfile",
    "influxdb": REPO / "influx" / "Dockerfile",
}


def test_the_bridge_user_has_the_fixed_ids_the_table_gives() -> None:
    text = DOCKERFILES["meter-bridge"].read_text()
    user = USERS["meter-bridge"]
    assert re.search(rf"groupadd --system --gid {user.gid} bridge\b", text)
    assert re.search(rf"useradd --system --uid {user.uid} --gid bridge --groups dialout\b", text)
    assert user.supplementary == ("dialout",)
    assert image_environment(DOCKERFILES["meter-bridge"])["BRIDGE_RUN_USER"] == user.name


def test_the_influxdb_image_gives_the_admin_token_to_influx_provisions_group() -> None:
    # influx-provision runs the meter-bridge image as `bridge`; the influxdb image has no such group
    assert image_environment(DOCKERFILES["influxdb"])["INFLUX_PROVISION_GID"] == str(USERS["meter-bridge"].gid)


def test_the_zigbee2mqtt_user_has_the_fixed_uid_the_table_gives() -> None:
    user = USERS["zigbee2mqtt"]
    assert re.search(
        rf"adduser -S -D -H -u {user.uid} -h /app/data -G dialout zigbee2mqtt\b", DOCKERFILES["zigbee2mqtt"].read_text()
    )
    assert (user.group, user.gid) == ("dialout", 20)  # dialout is 20 in Alpine's and Debian's group files
    assert image_environment(DOCKERFILES["zigbee2mqtt"])["Z2M_RUN_USER"] == user.name


def test_upstream_users_were_read_for_the_base_image_tags_in_use() -> None:
    for service in ("mqtt", "nginx", "influxdb"):
        (base,) = re.findall(r"^FROM\s+(\S+)", DOCKERFILES[service].read_text(), flags=re.MULTILINE)
        assert USERS[service].source.startswith(f"{base},"), (service, base, USERS[service].source)
    for service, variable in (("mqtt", "MOSQUITTO_RUN_USER"), ("nginx", "NGINX_RUN_USER")):
        assert image_environment(DOCKERFILES[service])[variable] == USERS[service].name, service


def test_every_image_that_drops_privileges_is_in_the_table() -> None:
    for dockerfile in [
        *REPO.glob("services/*/Dockerfile"),
        REPO / "nginx" / "Dockerfile",
        REPO / "influx" / "Dockerfile",
    ]:
        env = image_environment(dockerfile)
        for name, value in env.items():
            if name.endswith("_RUN_USER"):
                assert value in {user.name for user in USERS.values()}, (dockerfile, name, value)
