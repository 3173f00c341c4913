"""Register a source checkout of headpose_ros in an ament prefix, as ``colcon --symlink-install``.

Why this exists: ``scripts/setup.sh`` installs the package with ``pip install -e`` so that edits
to the checkout take effect at once, but an editable pip install installs none of setup.py's
``data_files``. Without them the prefix has no ament index marker, no
``share/headpose_ros/{launch,config,models}`` and no ``lib/headpose_ros/<executable>``, so
``ros2 pkg prefix``, ``ros2 run``, ``ros2 launch`` and ``FindPackageShare`` all say "package
'headpose_ros' not found".

This does what ``colcon build --symlink-install`` does for an ament_python package:

- every file of setup.py's ``data_files`` is symlinked into PREFIX, one link per file (ros2launch
  finds launch files with ``os.walk``, which does not descend into a symlinked folder);
- every console script is linked as ``lib/<package>/<name>``, where launch_ros and ``ros2 run``
  look for executables, to the script pip wrote into ``PREFIX/bin``;
- links this script made earlier that setup.py no longer lists are removed;
- ``PREFIX/bin/activate`` (a virtual environment's) gets ``AMENT_PREFIX_PATH`` covering PREFIX,
  restored by ``deactivate``.

The files and scripts are read from setup.py itself (the way colcon reads them), so this never
drifts from what a real colcon build installs (``test/test_colcon_layout.py`` checks that side).

    python scripts/register_in_ament_index.py --prefix .venv
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import setuptools

REPO_ROOT = Path(__file__).resolve().parents[1]
ACTIVATE_MARK = "# headpose_ros: this environment is an ament prefix"
_DEACTIVATE_ANCHOR = "    unset VIRTUAL_ENV\n"
_RESTORE_ON_DEACTIVATE = f"""\
    {ACTIVATE_MARK}: put AMENT_PREFIX_PATH back
    if [ -n "${{_OLD_VIRTUAL_AMENT_PREFIX_PATH+set}}" ] ; then
        if [ -n "$_OLD_VIRTUAL_AMENT_PREFIX_PATH" ] ; then
            AMENT_PREFIX_PATH="$_OLD_VIRTUAL_AMENT_PREFIX_PATH"
            export AMENT_PREFIX_PATH
        else
            unset AMENT_PREFIX_PATH
        fi
        unset _OLD_VIRTUAL_AMENT_PREFIX_PATH
    fi
"""
_SET_ON_ACTIVATE = f"""
{ACTIVATE_MARK} (ros2 pkg/run/launch, FindPackageShare
# look packages up through AMENT_PREFIX_PATH). Appended, so a workspace sourced earlier wins.
_OLD_VIRTUAL_AMENT_PREFIX_PATH="${{AMENT_PREFIX_PATH:-}}"
case ":${{AMENT_PREFIX_PATH:-}}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) AMENT_PREFIX_PATH="${{AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}}$VIRTUAL_ENV"
       export AMENT_PREFIX_PATH ;;
esac
"""


@dataclass(frozen=True)
class PackageLayout:
    """What setup.py installs: its name, data files (prefix-relative -> source) and scripts."""

    name: str
    data_files: dict[Path, Path]
    executables: tuple[str, ...]


def read_layout(source: Path) -> PackageLayout:
    """Run setup.py with ``setuptools.setup`` capturing its arguments: the declared layout."""
    declared: dict[str, Any] = {}
    original = setuptools.setup
    setuptools.setup = lambda **arguments: declared.update(arguments)
    previous = Path.cwd()
    os.chdir(source)  # setup.py globs relative to its own folder, as under colcon
    try:
        runpy.run_path(str(source / "setup.py"), run_name="__main__")
    finally:
        os.chdir(previous)
        setuptools.setup = original
    data_files = {
        Path(target_dir) / Path(name).name: source / name
        for target_dir, names in declared.get("data_files", [])
        for name in names
    }
    scripts = declared.get("entry_points", {}).get("console_scripts", [])
    return PackageLayout(
        name=declared["name"],
        data_files=data_files,
        executables=tuple(spec.split("=", 1)[0].strip() for spec in scripts),
    )


def _link(link: Path, target: Path) -> bool:
    """Make ``link`` a symlink to ``target`` (atomically); True when something changed."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    staged = link.with_name(f".{link.name}.tmp-link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)
    return True


def _stale_links(folder: Path, wanted: set[Path]) -> list[Path]:
    """Symlinks under ``folder`` that are not ``wanted`` (never regular files)."""
    if not folder.is_dir():
        return []
    return [path for path in folder.rglob("*") if path.is_symlink() and path not in wanted]


def hook_activate_script(activate: Path) -> bool:
    """Make a venv's bash/zsh ``activate`` set AMENT_PREFIX_PATH; True when it was changed."""
    text = activate.read_text()
    if ACTIVATE_MARK in text:
        return False
    if _DEACTIVATE_ANCHOR not in text:
        raise SystemExit(
            f"{activate}: not a Python venv activate script (no '{_DEACTIVATE_ANCHOR.strip()}')"
        )
    text = text.replace(_DEACTIVATE_ANCHOR, _RESTORE_ON_DEACTIVATE + _DEACTIVATE_ANCHOR, 1)
    activate.write_text(text + _SET_ON_ACTIVATE)
    return True


def register(source: Path, prefix: Path) -> list[str]:
    """Link ``source``'s package into ``prefix``; return one line per change made."""
    layout = read_layout(source)
    marker = Path("share/ament_index/resource_index/packages") / layout.name
    if marker not in layout.data_files:
        raise SystemExit(f"setup.py installs no ament index marker ({marker}) for {layout.name}")
    changes: list[str] = []
    wanted: set[Path] = set()
    for relative, origin in layout.data_files.items():
        if not origin.is_file():
            raise SystemExit(f"setup.py lists {origin}, which does not exist")
        wanted.add(prefix / relative)
        if _link(prefix / relative, origin):
            changes.append(f"linked {relative}")
    for name in layout.executables:
        script = prefix / "bin" / name
        if not script.is_file():
            raise SystemExit(f"{script} is missing: install the package (pip install -e) first")
        relative = Path("lib") / layout.name / name
        wanted.add(prefix / relative)
        if _link(prefix / relative, script):
            changes.append(f"linked {relative}")
    for folder in (prefix / "share" / layout.name, prefix / "lib" / layout.name):
        for stale in _stale_links(folder, wanted):
            stale.unlink()
            changes.append(f"removed stale link {stale.relative_to(prefix)}")
    activate = prefix / "bin" / "activate"
    if activate.is_file() and hook_activate_script(activate):
        changes.append("bin/activate sets AMENT_PREFIX_PATH")
    return changes


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--prefix`` (required) and ``--source`` (default: this checkout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path, required=True, help="ament prefix, e.g. .venv")
    parser.add_argument("--source", type=Path, default=REPO_ROOT, help="package checkout")
    args = parser.parse_args(argv)
    prefix, source = args.prefix.resolve(), args.source.resolve()
    changes = register(source, prefix)
    for line in changes:
        print(f"  {line}")
    state = f"{len(changes)} change(s)" if changes else "already current"
    print(f"headpose_ros registered in the ament index of {prefix} ({state})")


if __name__ == "__main__":
    sys.exit(main())
