"""Dependencies point one way: ``stages/`` builds on ``nanobot/``, never the reverse.

The one exception is the pipeline loader, which imports a stage module by
name (``importlib``) from ``pipeline.stages``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from servers import ROOT


def _is_stages(module: object) -> bool:  # a module name, or any ast.Constant's value
    return isinstance(module, str) and (module == "stages" or module.startswith("stages."))


def stage_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every import of ``stages`` in ``tree``: at module level, in functions, under TYPE_CHECKING."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_stages(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_stages(node.module):
            found.append((node.lineno, f"from {node.module}"))
        elif isinstance(node, ast.Call) and node.args:
            # importlib.import_module("stages.x") / __import__("stages.x") with the name spelled out
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) and _is_stages(arg.value):
                found.append((node.lineno, f"{name}({arg.value!r})"))
    return found


def test_the_checker_sees_every_kind_of_import():
    source = (
        "import stages.decode\n"
        "from stages.validate import Validate\n"
        "def f():\n    from stages import encode\n"
        "import importlib\nimportlib.import_module('stages.encode')\n"
        "from nanobot.stages_like import x\nimport stagesque\n"
    )
    assert [line for line, _ in stage_imports(ast.parse(source))] == [1, 2, 4, 6]


def test_nanobot_never_imports_stages():
    offenders = []
    for path in sorted((ROOT / "nanobot").rglob("*.py")):
        for line, what in stage_imports(ast.parse(path.read_text(), str(path))):
            offenders.append(f"{Path(path).relative_to(ROOT)}:{line}: {what}")
    assert offenders == []
