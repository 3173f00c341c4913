"""Fast DDS transport profile for camera-sized messages (``config/fastdds_large_images.xml``).

Fast DDS's default shared-memory segments (512 KB) are smaller than one VGA image, so images
between processes on one host fall back to fragmented UDP, where best-effort frames are lost
under load and reliable ones arrive milliseconds later. The shipped profile enlarges the
segment. Environment variables are read when rclpy creates its DDS participant, so the
entry points call :func:`use_large_image_profile` before ``rclpy.init``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from headpose_ros.core.model_paths import package_folder_candidates

__all__ = [
    "PROFILE_FILE_NAME",
    "PROFILE_VARIABLE",
    "large_image_profile",
    "use_large_image_profile",
]

PROFILE_FILE_NAME = "fastdds_large_images.xml"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
#: The deprecated name of the same setting (rmw_fastrtps warns when it is used): a user who
#: still sets it has chosen a profile too.
_LEGACY_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"


def large_image_profile() -> Path | None:
    """Find the installed profile (package share), else the source tree's; ``None`` if neither."""
    candidates = [folder / PROFILE_FILE_NAME for folder in package_folder_candidates("config")]
    return next((path for path in candidates if path.is_file()), None)


def use_large_image_profile(environ: MutableMapping[str, str] = os.environ) -> str:
    """Point Fast DDS at the shipped profile unless the user has chosen one; say what was done.

    A profile variable that is already set, even to an empty value, is the user's choice and
    is left alone; so is any RMW other than Fast DDS (the ROS 2 default, also when unset).
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "") or "rmw_fastrtps_cpp"
    if rmw != "rmw_fastrtps_cpp":
        return f"DDS profile: not applied ({rmw} is not Fast DDS)"
    for variable in (PROFILE_VARIABLE, _LEGACY_VARIABLE):
        if variable in environ:
            return f"DDS profile: {variable}={environ[variable]!r} kept (set by the user)"
    profile = large_image_profile()
    if profile is None:
        return f"DDS profile: {PROFILE_FILE_NAME} not found; Fast DDS defaults in use"
    environ[PROFILE_VARIABLE] = str(profile)
    return f"DDS profile: {profile} (shared-memory segments sized for images)"
