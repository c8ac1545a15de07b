"""Fail when pyproject.toml and the lock disagree: every requirement of the project and of each
extra must be pinned in the lock (on every Python the lock covers) at a version it allows, and
the bootstrap pins (torch) must be the lock's. Offline: it reads the three files only.

usage: python requirements/check_lock.py pyproject.toml requirements/lock.txt requirements/bootstrap.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)")


def pins(path: Path) -> dict[str, list[Version]]:
    """name -> every version the file pins it at (a universal lock pins one per Python fork)."""
    found: dict[str, list[Version]] = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found.setdefault(canonicalize_name(match[1]), []).append(Version(match[2]))
    return found


def problems(pyproject: Path, lock: Path, bootstrap: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    name = canonicalize_name(project["name"])
    wanted = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        wanted += extra
    locked, out = pins(lock), []
    for text in wanted:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        if key == name:  # an extra that names other extras of ponder
            continue
        if key not in locked:
            out.append(f"{req.name} ({text!r} in {pyproject.name}) is not in {lock}")
        for version in locked.get(key, []):
            if not req.specifier.contains(version, prereleases=True):
                out.append(f"{lock} pins {req.name}=={version}, {pyproject.name} asks {text!r}")
    for key, versions in pins(bootstrap).items():
        if key in locked and set(locked[key]) != set(versions):
            out.append(f"{bootstrap} pins {key}=={versions[0]}, {lock} {locked[key]}")
    return out


def main(argv: list[str]) -> int:
    pyproject, lock, bootstrap = (Path(a) for a in argv)
    found = problems(pyproject, lock, bootstrap)
    for line in found:
        print(f"lock out of date: {line}", file=sys.stderr)
    if found:
        print("run `make lock` and commit requirements/lock.txt", file=sys.stderr)
        return 1
    print(f"{lock} agrees with {pyproject} and {bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
