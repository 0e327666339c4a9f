"""The house rules of the packages, read from the source: imports run one way with no circle (lazy imports
inside functions count too), the study record and ``dashboards`` import no Ray, every module says why it exists."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"lgeseg": ROOT / "src" / "lgeseg", "hpo": ROOT / "hpo", "dashboards": ROOT / "dashboards"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports (anywhere in the file), resolved to project modules or top-level names."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            if target in modules:
                out.add(target)
            elif target.split(".")[0] not in PACKAGES:
                out.add(target.split(".")[0])
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circle_among_the_packages():
    graph = _graph()
    circles = sorted(name for name in graph if name in _reach(graph, name))
    assert circles == []


def test_imports_run_one_way():
    graph = _graph()
    for name, targets in graph.items():
        if name.startswith("lgeseg"):
            assert not {t for t in targets if t.split(".")[0] in ("hpo", "dashboards", "ray", "optuna")}, name
        if name.startswith("hpo"):
            assert (
                not {t for t in targets if t.startswith("dashboards")}
                or name == "hpo.commands.study"
                or (name == "hpo.commands.report")
            ), name


def test_the_record_and_dashboards_import_no_ray():
    graph = _graph()
    ray_free = [n for n in graph if n.startswith("dashboards")] + ["hpo.record", "hpo.study_config", "hpo.sampling"]
    for name in ray_free:
        assert "ray" not in _reach(graph, name), name


def test_every_module_opens_with_why_it_exists():
    for name, path in _modules().items():
        if path.name == "__init__.py" and not path.read_text().strip():
            continue
        assert ast.get_docstring(ast.parse(path.read_text())), name


def test_every_file_the_readme_names_is_there():
    """README's paths into the repository (modules, tests, configs) name files that exist: test files moved into
    tests/e2e while the README still sent readers to tests/hpo. ``bench/results/`` is git-ignored output."""
    import re

    text = (ROOT / "README.md").read_text() + (ROOT / "bench" / "README.md").read_text()
    named = set(
        re.findall(r"(?<![\w/.])((?:tests|hpo|dashboards|src/lgeseg|study_configs|bench|\.ci)/[\w/.-]*\w)", text)
    )
    assert len(named) > 50  # the pattern still finds the README's paths
    missing = sorted(p for p in named if not p.startswith("bench/results") and not (ROOT / p).exists())
    assert missing == []
