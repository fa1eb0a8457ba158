"""Every import arrow in espnet_probe points down: the floors of docs/DESIGN.md section 1.

Each module belongs to a room (``espnet_probe/<room>/`` or ``espnet_probe/<room>.py``) and each
room to a floor. Every import, function-local ones included, is read with ``ast``: a module may
import from its own floor or a lower one, rooms of one floor may not import each other in a
cycle, and no module imports another module's ``_private`` name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

from conftest import REPO

PACKAGE = REPO / "espnet_probe"
DESIGN = REPO / "docs" / "DESIGN.md"
ROOT = "__init__"  # the package itself


class Import(NamedTuple):
    where: str  # path:line
    module: str  # the importing module, espnet_probe.x.y
    target: str  # the imported module
    name: str  # the imported name ("" for ``import module``)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def read_floors(design: Path) -> dict[str, int]:
    """Room -> floor (1 = ground) from the numbered list after 'Floors, lowest first.'."""
    text = design.read_text(encoding="utf-8")
    start = text.find("Floors, lowest first.")
    assert start >= 0, f"{design}: no 'Floors, lowest first.' list in section 1"
    floors = {}
    for number, item in re.findall(r"^(\d+)\. (.*)$", text[start:].split("\n\n", 2)[1], re.M):
        for token in re.findall(r"`([^`]+)`", item.split(": ")[0]):
            floors[token.removesuffix("/").removesuffix(".py")] = int(number)
    assert floors, f"{design}: the floors list names no room"
    return floors


def module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(package: Path) -> list[Import]:
    """Every import of a package module by a package module, at any depth of the code."""
    modules = {module_name(package, p): p for p in package.rglob("*.py")}
    found = []
    for module, path in sorted(modules.items()):
        # a relative import starts from the module's own package
        home = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            if isinstance(node, ast.Import):
                found += [Import(where, module, a.name, "") for a in node.names
                          if a.name.split(".")[0] == package.name]
            else:
                base = node.module or ""
                if node.level:
                    base = ".".join(home[: len(home) - node.level + 1] + ([base] if base else []))
                if base.split(".")[0] != package.name:
                    continue
                for alias in node.names:  # ``from package.room import module`` names a module
                    sub = f"{base}.{alias.name}"
                    found.append(Import(where, module, sub if sub in modules else base,
                                        "" if sub in modules else alias.name))
    return found


def upward(imports: list[Import], floors: dict[str, int]) -> list[str]:
    return list(dict.fromkeys(  # one line per import statement, not per name
        f"{i.where}: {i.module} (floor {floors[room_of(i.module)]}) imports {i.target} "
        f"(floor {floors[room_of(i.target)]})" for i in imports
        if floors[room_of(i.target)] > floors[room_of(i.module)]))


def same_floor_cycles(imports: list[Import], floors: dict[str, int]) -> list[list[str]]:
    """Cycles among the rooms of one floor, each from its first room (by name) back to it."""
    edges: dict[str, set[str]] = {}
    for i in imports:
        a, b = room_of(i.module), room_of(i.target)
        if a != b and floors[a] == floors[b]:
            edges.setdefault(a, set()).add(b)
    cycles = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt == path[0]:
                cycles.append(path + [nxt])
            elif nxt > path[0] and nxt not in path:
                walk(path + [nxt])

    for room in sorted(edges):
        walk([room])
    return cycles


def private_names(imports: list[Import]) -> list[str]:
    return [f"{i.where}: {i.module} imports {i.name or i.target} from {i.target}" for i in imports
            if i.target != i.module and (i.name.startswith("_") or any(
                part.startswith("_") and part != ROOT for part in i.target.split(".")))]


def test_every_room_is_on_a_floor():
    floors = read_floors(DESIGN)
    rooms = {room_of(module_name(PACKAGE, p)) for p in PACKAGE.rglob("*.py")}
    assert sorted(rooms - set(floors)) == [], f"rooms on no floor of {DESIGN} section 1"
    assert sorted(set(floors) - rooms) == [], f"floors of {DESIGN} name rooms that do not exist"


def test_no_module_imports_a_higher_floor():
    found = upward(package_imports(PACKAGE), read_floors(DESIGN))
    assert not found, "imports up a floor:\n" + "\n".join(found)


def test_rooms_of_one_floor_import_each_other_in_no_cycle():
    found = same_floor_cycles(package_imports(PACKAGE), read_floors(DESIGN))
    assert not found, "cycles between rooms of one floor: " + "; ".join(map(" -> ".join, found))


def test_no_private_name_is_imported_from_another_module():
    found = private_names(package_imports(PACKAGE))
    assert not found, "private names imported:\n" + "\n".join(found)


def test_the_checks_find_an_upward_local_import_a_cycle_and_a_private_name(tmp_path):
    package = tmp_path / "espnet_probe"
    files = {
        "__init__.py": "",
        "utils/__init__.py": "",
        "utils/disk.py": "def save():\n    from espnet_probe.bin import tool\n",
        "utils/names.py": "from .disk import _hidden\n",
        "audio/__init__.py": "import espnet_probe.data.dirs\n",
        "data/dirs.py": "from espnet_probe.audio import features\n",
        "audio/features.py": "",
        "bin/tool.py": "from espnet_probe.utils.disk import save\n",
    }
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    floors = {"utils": 1, "audio": 2, "data": 2, "bin": 3, ROOT: 4}
    imports = package_imports(package)
    assert upward(imports, floors) == [
        "espnet_probe/utils/disk.py:2: espnet_probe.utils.disk (floor 1) imports "
        "espnet_probe.bin.tool (floor 3)"]
    assert same_floor_cycles(imports, floors) == [["audio", "data", "audio"]]
    assert private_names(imports) == [
        "espnet_probe/utils/names.py:1: espnet_probe.utils.names imports _hidden from "
        "espnet_probe.utils.disk"]
