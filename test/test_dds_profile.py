"""The Fast DDS large-image profile: when entry points apply it, and that it fits camera frames."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from headpose_ros.dds_profile import (
    PROFILE_FILE_NAME,
    large_image_profile,
    use_large_image_profile,
)

NAMESPACE = {"f": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}


def test_applied_when_no_profile_is_chosen() -> None:
    environ: dict[str, str] = {}
    line = use_large_image_profile(environ)
    assert environ["FASTDDS_DEFAULT_PROFILES_FILE"].endswith(PROFILE_FILE_NAME)
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in environ  # deprecated name: rmw warns on it
    assert PROFILE_FILE_NAME in line


def test_the_users_choice_and_other_rmws_are_left_alone() -> None:
    for chosen in (
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml"},
        {"FASTDDS_DEFAULT_PROFILES_FILE": ""},  # empty: keep Fast DDS's own defaults
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/robot/dds.xml"},
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
    ):
        environ = dict(chosen)
        line = use_large_image_profile(environ)
        assert environ == chosen, line
    environ = {"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    use_large_image_profile(environ)
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in environ


def test_profile_keeps_shared_memory_and_udp_with_segments_for_full_hd_frames() -> None:
    profile = large_image_profile()
    assert profile is not None and profile.name == PROFILE_FILE_NAME
    root = ElementTree.parse(profile).getroot()
    descriptors = {
        d.findtext("f:transport_id", namespaces=NAMESPACE): d
        for d in root.iterfind(".//f:transport_descriptor", NAMESPACE)
    }
    by_type = {d.findtext("f:type", namespaces=NAMESPACE): d for d in descriptors.values()}
    assert sorted(by_type) == ["SHM", "UDPv4"] and len(descriptors) == 2
    shm = by_type["SHM"]
    assert int(shm.findtext("f:segment_size", namespaces=NAMESPACE)) >= 2 * 1920 * 1080 * 3
    participant = root.find("f:participant", NAMESPACE)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//f:useBuiltinTransports", namespaces=NAMESPACE) == "false"
    used = [t.text for t in participant.iterfind(".//f:userTransports/f:transport_id", NAMESPACE)]
    assert sorted(used) == sorted(descriptors)
