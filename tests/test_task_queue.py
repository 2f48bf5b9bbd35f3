"""Only feeds/tasks.py speaks to django-q2: the engine is handed a queue and describes schedules; no other module
imports django_q, names its API or a task's dotted path, and the engine never imports the task module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from feeds import queueing, scheduling, sync, tasks
from feeds.models import SyncRun
from tests.helpers import make_job, make_workspace, purchase_rows, write_csv

FEEDS = Path(__file__).resolve().parent.parent / "feeds"
# The engine: what reads, routes, sends and schedules runs. None of it may import the task module.
ENGINE = [
    *("sync", "queueing", "reading", "pipeline", "sending", "dispatch", "replays", "sweeper", "scheduling"),
    *("preview", "pacing", "alerts"),
]
DJANGO_Q_NAMES = {"async_task", "Schedule", "Conf", "Stat", "get_broker", "post_spawn", "OrmQ", "Task"}


def modules() -> list[Path]:
    return [
        path
        for path in sorted(FEEDS.rglob("*.py"))
        if path != FEEDS / "tasks.py" and "migrations" not in path.relative_to(FEEDS).parts
    ]


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes (prose may say what django-q2 does; code may not name it)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_no_module_but_tasks_names_django_q():
    found = []
    for path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(FEEDS.parent)
        found += [f"{where}: imports {name}" for name in imported(tree) if name.split(".")[0] == "django_q"]
        prose = docstrings(tree)
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and id(node) not in prose else None
            if isinstance(text, str) and ("feeds.tasks." in text or "django_q" in text):
                found.append(f"{where}:{node.lineno}: {text!r}")
    assert found == []


def test_the_engine_never_imports_the_task_module():
    found = []
    for name in ENGINE:
        tree = ast.parse((FEEDS / f"{name}.py").read_text(encoding="utf-8"))
        found += [f"feeds/{name}.py imports {m}" for m in imported(tree) if m in ("feeds.tasks", "feeds.tasks.tasks")]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "feeds":
                found += [f"feeds/{name}.py imports feeds.tasks" for alias in node.names if alias.name == "tasks"]
            if isinstance(node, ast.Name) and node.id in DJANGO_Q_NAMES:
                found.append(f"feeds/{name}.py:{node.lineno} names {node.id}")
    assert found == []


@pytest.mark.django_db
def test_the_engine_hands_runs_to_the_queue_it_was_given(tmp_path):
    class Recorded:
        def __init__(self):
            self.runs: list[int] = []

        def queue_run(self, run_id: int) -> str:
            self.runs.append(run_id)
            return f"task-{run_id}"

    job = make_job(make_workspace(), write_csv(tmp_path / "orders.csv", purchase_rows(2)))
    run = sync.start_run(job)
    recorded = Recorded()
    queueing.use_queue(recorded)
    try:
        assert sync.enqueue_run(run) == f"task-{run.pk}"
    finally:
        queueing.use_queue(tasks.Queue())
    assert recorded.runs == [run.pk]
    assert SyncRun.objects.get(pk=run.pk).queued_at is not None


@pytest.mark.django_db
def test_a_schedule_is_described_by_the_engine_and_kept_by_the_task_module(tmp_path):
    job = make_job(make_workspace(), write_csv(tmp_path / "orders.csv", purchase_rows(2)))
    assert scheduling.schedule_of(job) is None and tasks.kept_schedule(job) is None
    job.schedule_minutes = 15
    job.save()  # (the signal keeps the queue's schedule in step)
    wanted = scheduling.schedule_of(job)
    kept = tasks.kept_schedule(job)
    assert (
        (wanted.name, wanted.minutes, wanted.cron)
        == (kept.name, kept.minutes, kept.cron)
        == (
            f"mpfeed-job-{job.pk}",
            15,
            None,
        )
    )
    assert kept.next_run is not None


def import_graph() -> dict[str, set[str]]:
    """feeds' modules and the feeds modules each imports anywhere in it (function-level imports included)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(FEEDS.rglob("*.py")):
        parts = path.relative_to(FEEDS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                edges.add(node.module)
                edges |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {e for e in edges if e.startswith("feeds")}
    return {name: {e for e in edges if e in graph and e != name} for name, edges in graph.items()}


def test_no_import_cycle_runs_through_the_task_module_or_the_engine():
    graph = import_graph()
    for start in ["feeds.tasks", *(f"feeds.{name}" for name in ENGINE)]:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        assert start not in seen, f"{start} imports itself through {sorted(seen)}"
