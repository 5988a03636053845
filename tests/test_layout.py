"""The shape rules the redesign set, checked on the source: small functions, and no task-type branches
outside the kit modules.

Each check is a plain AST scan of mechwork/, and each has a counter-check on a snippet that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mechwork"
MAX_LINES = 80  # the longest a function in mechwork/ may be, decorators and docstring included
KIT_MODULES = {PACKAGE / "tasks" / "modadd.py", PACKAGE / "tasks" / "induction.py"}


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))]


def long_functions(tree: ast.Module, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """``(name, lines)`` of every function longer than ``limit`` lines."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            n = node.end_lineno - first + 1 if node.end_lineno is not None else 0
            if n > limit:
                out.append((node.name, n))
    return out


def task_type_branches(tree: ast.Module, task_classes: set[str]) -> list[int]:
    """Lines of ``isinstance(x, C)`` where C (or a member of a tuple) names a task class."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" \
                and len(node.args) == 2:
            kinds = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            names = {k.id if isinstance(k, ast.Name) else k.attr if isinstance(k, ast.Attribute) else "" for k in kinds}
            if names & task_classes:
                lines.append(node.lineno)
    return lines


def _task_classes() -> set[str]:
    """Every class the kit modules define (the task dataclasses and their helpers)."""
    names = set()
    for path in KIT_MODULES:
        names |= {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}
    return names


def test_no_function_in_the_package_is_over_the_limit() -> None:
    found = {f"{p.relative_to(ROOT)}:{name}": n for p, tree in _sources() for name, n in long_functions(tree)}
    assert found == {}


def test_the_length_check_catches_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(ast.parse(f"def f():\n{body}\n")) == [("f", MAX_LINES + 1)]
    assert long_functions(ast.parse("def g():\n    return 1\n")) == []


def test_no_task_type_branch_outside_the_kits() -> None:
    classes = _task_classes()
    assert {"ModularArithmetic", "InductionTask"} <= classes
    found = {str(p.relative_to(ROOT)): lines for p, tree in _sources() if p not in KIT_MODULES
             if (lines := task_type_branches(tree, classes))}
    assert found == {}


def test_the_branch_check_catches_isinstance_on_a_task() -> None:
    snippet = ("if isinstance(task, (InductionTask, int)):\n    pass\n"
               "if isinstance(x, tasks.ModularArithmetic):\n    pass\n")
    assert task_type_branches(ast.parse(snippet), {"InductionTask", "ModularArithmetic"}) == [1, 3]
    assert task_type_branches(ast.parse("isinstance(x, int)"), {"InductionTask"}) == []
