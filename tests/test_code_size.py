"""No function in the package is longer than 100 lines of code (issue 26, item 5).

Lines of code: the lines from ``def`` to the function's last line that hold
code, so without blank lines, comment lines and the docstring. Nested
functions count in their parent too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bigdecon

MAX_LINES = 100
PACKAGE = Path(bigdecon.__file__).parent


def code_lines(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of code of ``node`` in ``source``: no blank lines, comment lines or docstring."""
    lines = source.splitlines()
    skip: set[int] = set()
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        skip = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    end = node.end_lineno or node.lineno
    return sum(
        1
        for number in range(node.lineno, end + 1)
        if number not in skip and lines[number - 1].strip() and not lines[number - 1].strip().startswith("#")
    )


def long_functions(limit: int = MAX_LINES) -> list[str]:
    """``module.py:line name (n lines)`` of every function of the package over ``limit`` lines of code."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = code_lines(source, node)
                if n > limit:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_counting_leaves_out_docstring_comments_and_blank_lines():
    body = "\n".join(f"    x{i} = {i}  # a trailing comment is code" for i in range(3))
    source = f'def f():\n    """Doc.\n\n    More doc.\n    """\n    # a comment\n\n{body}\n    return x0\n'
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert code_lines(source, node) == 1 + 3 + 1  # def, three assignments, return


def test_the_package_is_parsed_whole():
    """The walk sees the package's modules and functions (a wrong path would pass the next test vacuously)."""
    modules = list(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    assert any(p.name == "run.py" and p.parent.name == "passes" for p in modules)
    assert long_functions(limit=60), "some function is over 60 lines: the counter sees real code"


def test_no_function_is_over_100_lines_of_code():
    offenders = long_functions()
    assert not offenders, "functions over 100 lines of code (split them):\n" + "\n".join(offenders)
