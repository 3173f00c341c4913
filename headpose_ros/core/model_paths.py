"""Where the shipped model lives, for installed packages and for a source checkout.

The product finds its model through a setting (``inference.model_dir``); when that is empty it
uses the models shipped with the package: first the installed share directory
(``share/headpose_ros/models``, found through the ament prefixes when a workspace is sourced,
else under the Python prefix), then the source tree's ``models/`` folder (a developer running
from a clone).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "MANIFEST_NAME",
    "PACKAGE_NAME",
    "default_model_dir",
    "package_folder_candidates",
    "resolve_model_dir",
    "share_dir_candidates",
]

PACKAGE_NAME = "headpose_ros"
MANIFEST_NAME = "manifest.json"


def share_dir_candidates(package: str) -> list[Path]:
    """Possible installed share directories of ``package``, most specific first.

    The ament prefixes of a sourced ROS workspace (``AMENT_PREFIX_PATH``, read directly: the
    core may not import ROS packages) come first; the Python prefix's ``share/`` covers a pip
    or setup-script install into a virtual environment.
    """
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    found = [
        prefix / "share" / package
        for prefix in prefixes
        if (prefix / "share" / "ament_index" / "resource_index" / "packages" / package).is_file()
    ]
    found.append(Path(sys.prefix) / "share" / package)
    return found


def package_folder_candidates(folder: str) -> list[Path]:
    """Where the package's ``folder`` (models, config) may be: installed shares, then source."""
    source_tree = Path(__file__).resolve().parents[2] / folder
    return [share / folder for share in share_dir_candidates(PACKAGE_NAME)] + [source_tree]


def default_model_dir() -> Path:
    """Return the first candidate folder holding a ``manifest.json`` (else the source tree's).

    Returning a path even when nothing is there lets the loader raise its usual error naming
    the missing manifest, instead of a second, vaguer message here.
    """
    candidates = package_folder_candidates("models")
    for folder in candidates:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return candidates[-1]


def resolve_model_dir(setting: str | Path) -> Path:
    """``inference.model_dir`` -> folder: the setting itself when given, else the default."""
    text = str(setting).strip()
    return Path(text).expanduser() if text else default_model_dir()
