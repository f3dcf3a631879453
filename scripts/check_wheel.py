"""``make dist``'s content check: the wheel holds the app only.

Run as ``python -m scripts.check_wheel dist/`` after ``python -m build``: exit 1 (naming the files) when the
newest wheel in the folder carries the reference project, tests, benchmarks or scripts, or lacks any of the
app's parts that are not Python modules (migrations, templates, static files, py.typed, the management
command).  Prints a one-line summary of what it holds otherwise."""

from __future__ import annotations

import sys
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath

FORBIDDEN_TOP_LEVEL = ("project", "tests", "bench", "scripts", "templates", "nginx", "docs", "var")
REQUIRED = {
    "migrations": "certauth/migrations/0001_initial.py",
    "templates": "certauth/templates/admin/certauth/certificateidentity/change_form.html",
    "static": "certauth/static/certauth/admin.css",
    "py.typed": "certauth/py.typed",
    "management command": "certauth/management/commands/certauth.py",
    "license": "LICENSE",
}


def problems(names: list[str]) -> list[str]:
    found = []
    for name in names:
        top = PurePosixPath(name).parts[0]
        if top in FORBIDDEN_TOP_LEVEL or name == "manage.py":
            found.append(f"must not be in the wheel: {name}")
        elif top != "certauth" and not top.endswith(".dist-info"):
            found.append(f"not part of the app: {name}")
    for what, path in REQUIRED.items():
        if what == "license":
            if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
                found.append("missing: the license file (.dist-info/licenses/LICENSE)")
        elif path not in names:
            found.append(f"missing {what}: {path}")
    return found


def summary(names: list[str]) -> str:
    kinds: Counter[str] = Counter()
    for name in names:
        parts = PurePosixPath(name).parts
        if parts[0].endswith(".dist-info"):
            kinds["metadata"] += 1
        elif len(parts) > 1 and parts[1] in {"migrations", "templates", "static"}:
            kinds[parts[1]] += 1
        elif name.endswith(".py"):
            kinds["modules"] += 1
        else:
            kinds["other"] += 1
    return ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "dist")
    wheels = sorted(folder.glob("django_certauth-*.whl"), key=lambda path: path.stat().st_mtime)
    if not wheels:
        print(f"check_wheel: no django_certauth-*.whl in {folder}/", file=sys.stderr)
        return 1
    wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
    found = problems(names)
    for problem in found:
        print(f"check_wheel: {wheel.name}: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"check_wheel: {wheel.name} ({wheel.stat().st_size // 1024} KiB): {len(names)} files: {summary(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
