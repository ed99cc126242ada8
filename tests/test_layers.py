"""The house rules, read from the code's own imports: engines/ knows neither the app nor the
trainer, the app never imports the trainer, and no module imports another that imports it back.
And the drop-oldest queue that joins the pipeline's threads."""
from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "deocc_live", "trainer")
# A package may import the ones after it in its row, and no other of ours.
ALLOWED = {"engines": set(), "deocc_live": {"engines"}, "trainer": {"engines", "deocc_live"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the modules of ours it imports, anywhere in it (lazy imports inside functions too)."""
    graph = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = _module_name(path)
            found = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found |= {f"{node.module}.{alias.name}" for alias in node.names}
            graph[name] = {m for m in found if m.split(".")[0] in PACKAGES}
    modules = set(graph)
    # "from deocc_live.stages import align" names a module; "from engines import open_engine" does not.
    return {name: {m for m in targets if m in modules and m != name} for name, targets in graph.items()}


def test_imports_point_down_only():
    upward = [(name, target) for name, targets in _imports().items() for target in targets
              if target.split(".")[0] != name.split(".")[0] and target.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not upward, upward


def test_no_module_imports_in_a_circle():
    graph = _imports()
    cycles = []

    def visit(node, path, on_path):
        for target in graph.get(node, ()):
            if target in on_path:
                cycles.append(path[path.index(target):] + [target])
            elif len(path) < 12:
                visit(target, path + [target], on_path | {target})

    for start in graph:
        visit(start, [start], {start})
    # A package's __init__ importing its own modules (and them it) is how Python packages work.
    cycles = [c for c in cycles if not any(m == c[0].rsplit(".", 1)[0] for m in c)]
    assert not cycles, cycles[:5]


def test_the_rule_reader_sees_an_upward_import(tmp_path, monkeypatch):
    """The two tests above can fail: a module of engines/ that imported the app would be found."""
    fake = tmp_path / "engines"
    fake.mkdir()
    (fake / "bad.py").write_text("def f():\n    from deocc_live.stages import align\n")
    (tmp_path / "deocc_live" / "stages").mkdir(parents=True)
    (tmp_path / "deocc_live" / "stages" / "align.py").write_text("")
    (tmp_path / "trainer").mkdir()
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _imports()["engines.bad"] == {"deocc_live.stages.align"}
    with pytest.raises(AssertionError):
        test_imports_point_down_only()


def test_drop_oldest_queue_keeps_the_newest_for_live_sources():
    from deocc_live.pipeline import DropOldestQueue

    stop = threading.Event()
    live = DropOldestQueue(maxsize=2, drop=True)
    for item in range(5):
        assert live.put(item, stop)
    assert live.dropped == 3 and live.qsize() == 2
    assert [live.get(stop), live.get(stop)] == [3, 4]  # the oldest went, order kept


def test_drop_oldest_queue_never_drops_for_files():
    from deocc_live.pipeline import DropOldestQueue

    stop = threading.Event()
    files = DropOldestQueue(maxsize=2, drop=False)
    got = []
    reader = threading.Thread(target=lambda: got.extend(files.get(stop) for _ in range(6)))
    reader.start()
    for item in range(6):
        assert files.put(item, stop)  # waits for the reader instead of dropping
    reader.join(5)
    assert got == list(range(6)) and files.dropped == 0


def test_a_stopped_queue_gives_up_instead_of_blocking():
    from deocc_live.pipeline import DropOldestQueue

    stop = threading.Event()
    full = DropOldestQueue(maxsize=1, drop=False)
    assert full.put("a", stop)
    stop.set()
    assert full.put("b", stop) is False  # a full file queue returns once stopped
    empty = DropOldestQueue(maxsize=1)
    assert empty.get(stop) is not None  # the end marker, not a hang
