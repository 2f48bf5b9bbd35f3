"""The import graph held against ARCHITECTURE.md: every module in one part, no import pointing at a part below its
own, no Django in the parts that must do without it, and none of the arrows that must not exist. The tables are
read from ARCHITECTURE.md itself, so the page and the code cannot drift apart. Imports inside functions count."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("feeds", "sandbox", "mpfeed_site", "partner_api")


@dataclass(frozen=True)
class Part:
    name: str
    patterns: tuple[str, ...]
    django: bool


def matches(module: str, pattern: str) -> bool:
    """`feeds.views*` takes feeds.views and its modules; `feeds` only the package itself."""
    if pattern.endswith("*"):
        base = pattern[:-1]
        return module == base or module.startswith(base + ".")
    return module == pattern


def table(marker: str) -> list[list[str]]:
    """The rows of the table between `<!-- marker: ... -->` and `<!-- end marker -->`, header left out."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)}:.*?-->\n(.*?)<!-- end {re.escape(marker)} -->", text, re.S)
    assert found, f"ARCHITECTURE.md has no {marker!r} table"
    rows = [line.strip().strip("|").split("|") for line in found.group(1).strip().splitlines()]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # past the header and its --- line


def names(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


@cache
def parts() -> list[Part]:
    return [Part(name, names(modules), django == "yes") for name, modules, django in table("parts")]


@cache
def modules() -> dict[str, Path]:
    """Every module of the project (migrations aside), by dotted name."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts_ = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts_:
                continue
            out[".".join(parts_[:-1] if parts_[-1] == "__init__" else parts_)] = path
    return out


@cache
def imports() -> dict[str, set[str]]:
    """What each module imports anywhere in it: project modules by their dotted name, others by their top name."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target not in known and "." in target and target.split(".")[0] in PACKAGES:
                    target = target.rpartition(".")[0]  # an object imported from a module: the module
                found.add(target if target.split(".")[0] in PACKAGES else target.split(".")[0])
        graph[name] = found - {name}
    return graph


def part_of(module: str) -> int | None:
    places = [i for i, part in enumerate(parts()) if any(matches(module, p) for p in part.patterns)]
    return places[0] if len(places) == 1 else None


def test_the_tables_are_read():
    assert len(parts()) >= 5 and table("must not") and table("allowed")
    assert {"feeds.tasks", "feeds.models", "feeds.mparticle.batch", "sandbox.server"} <= set(modules())


def test_every_module_is_in_exactly_one_part():
    homeless = {m: [p.name for p in parts() if any(matches(m, x) for x in p.patterns)] for m in modules()}
    assert {m: where for m, where in homeless.items() if len(where) != 1} == {}


def test_no_import_points_at_a_part_below_its_own():
    wrong = []
    for module, targets in imports().items():
        here = part_of(module)
        for target in targets:
            there = part_of(target) if target in modules() else None
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} ({parts()[here].name}) imports {target} ({parts()[there].name})")
    assert wrong == []


def test_the_parts_without_django_import_none_of_it():
    wrong = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        if (place := part_of(module)) is not None and not parts()[place].django
        for target in targets
        if target == "django" or target.startswith("django_")
    ]
    assert wrong == []


def test_none_of_the_arrows_that_must_not_exist():
    allowed = [(names(a), names(b)) for a, b, _ in table("allowed")]
    wrong = []
    for sources, targets, why in table("must not"):
        for module, imported in imports().items():
            if not any(matches(module, s) for s in names(sources)):
                continue
            for target in imported:
                if not any(matches(target, t) for t in names(targets)):
                    continue
                if any(any(matches(module, a) for a in froms) and any(matches(target, b) for b in tos)
                       for froms, tos in allowed):  # fmt: skip
                    continue
                wrong.append(f"{module} imports {target}: {why}")
    assert wrong == []


@pytest.mark.parametrize(
    ("module", "target", "reason"),
    [
        ("feeds.sync", "feeds.tasks", "a part below"),
        ("feeds.models", "feeds.views.staff", "a part below"),
        ("feeds.mparticle.batch", "django", "no Django"),
        ("feeds.views.staff", "feeds.admin", "must not"),
    ],
)
def test_the_checks_catch_a_forbidden_import(module, target, reason):
    """Each check, given one import it must refuse, refuses it (so a check that can no longer fail is noticed)."""
    here, there = part_of(module), part_of(target)
    if reason == "a part below":
        assert here is not None and there is not None and there > here
    elif reason == "no Django":
        assert here is not None and not parts()[here].django
    else:
        assert any(
            any(matches(module, s) for s in names(a)) and any(matches(target, t) for t in names(b))
            for a, b, _ in table("must not")
        )
