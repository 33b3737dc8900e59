"""The package's shape: folders import one way with no cycles, and the public API at the top
(the README's Python example runs as written)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

import mipnet_cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mipnet_cli"

# A folder may import from its own folder and from folders of a lower layer only.
LAYERS = {
    "core": 0,
    "models": 1, "media": 1,
    "checkpoints": 2, "data": 2,
    "detect": 3, "synth": 3,
    "pose": 4,
    "evaluate": 5,
    "annotate": 6, "inspect": 6, "train": 6,
    "bench": 7,
    "cli": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports (lazy imports included)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_package_top_holds_only_the_api_and_the_entry_point() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(LAYERS)
    for folder in folders:  # each says what it owns
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text()))


def test_imports_run_one_way() -> None:
    graph = _imports()
    wrong = []
    for module, deps in graph.items():
        if module in ("mipnet_cli", "mipnet_cli.__main__"):
            continue
        here = _folder(module)
        for dep in deps:
            there = _folder(dep)
            if dep == "mipnet_cli" or there is None:
                wrong.append(f"{module} imports the package top ({dep})")
            elif there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} ({here}) imports {dep} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = _imports()
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_public_api_names_resolve() -> None:
    exported = set(mipnet_cli.__all__) - {"__version__"}
    assert exported == set(mipnet_cli._EXPORTS)
    for name in sorted(exported):
        value = getattr(mipnet_cli, name)
        assert value.__name__ == name
        assert value.__module__ == f"mipnet_cli.{mipnet_cli._EXPORTS[name]}"
    assert exported <= set(dir(mipnet_cli))
    with pytest.raises(AttributeError):
        mipnet_cli.no_such_name  # noqa: B018


def test_readme_python_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "from mipnet_cli import" in code
    for name in ("samples", "weights"):
        (tmp_path / name).symlink_to(ROOT / name)
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(cwd)
    assert len(namespace["poses"]) >= 1
    assert all(p.keypoints.shape == (17, 3) for p in namespace["poses"])
    assert namespace["summary"].frames == 5 and namespace["summary"].complete
    lines = (tmp_path / "clip_000.jsonl").read_text().splitlines()
    assert len(lines) == 6  # five frames and the end record
    printed = capsys.readouterr().out
    assert "000001.jpg" in printed and "000002.jpg" in printed
