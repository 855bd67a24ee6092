"""List the literal copies of the parameter model's defaults left in the package (issue 26 item 4).

Three kinds, found in the source's syntax tree (docstrings and comments are not code):

- ``signature``: a function argument named like a model parameter (or a solver's
  short name for one, ``SIGNATURE_ALIASES`` of ``tests/test_params.py``) whose
  default is a literal. The signature test checks these against the model, so
  they may stay; the listing shows where they are.
- ``argparse``: ``add_argument(..., default=<literal>)`` outside the model.
- ``value``: a literal equal to a distinctive model default (a string of 3+
  characters, or a number other than -1, 0, 1, 2) anywhere else in code, outside
  ``params.py``.

Usage: ``python benchmarks/literal_defaults.py [--summary]`` from the repository root.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bigdecon.params import PARAMETERS  # noqa: E402  (after the path is set)

ALIASES = {"iterations", "alpha", "beta", "order", "timeout"}


def _distinctive(value: object) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, str):
        return len(value) >= 3
    return isinstance(value, (int, float)) and value not in (-1, 0, 1, 2)


DEFAULT_VALUES = {p.default for p in PARAMETERS.values() if _distinctive(p.default)}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out


def _signature_hits(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[int, str]]:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    hits = []
    for arg, default in pairs:
        named = arg.arg in PARAMETERS or arg.arg in ALIASES
        if named and isinstance(default, ast.Constant) and default.value is not None:
            hits.append((default.lineno, f"{node.name}({arg.arg}={default.value!r})"))
    return hits


def scan(path: Path) -> list[tuple[str, int, str]]:
    """``(kind, line, text)`` of each literal default in one module."""
    tree = ast.parse(path.read_text())
    docstrings = _docstring_nodes(tree)
    hits: list[tuple[str, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            hits += [("signature", line, text) for line, text in _signature_hits(node)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and kw.value.value is not None:
                    hits.append(("argparse", node.lineno, ast.unparse(node.args[0]) if node.args else "?"))
        elif isinstance(node, ast.Constant) and id(node) not in docstrings and path.name != "params.py":
            try:
                known = _distinctive(node.value) and node.value in DEFAULT_VALUES
            except TypeError:
                known = False
            if known:
                hits.append(("value", node.lineno, repr(node.value)))
    # A signature default is also a Constant: count it once, as a signature.
    seen = {(line, kind) for kind, line, _ in hits if kind in ("signature", "argparse")}
    return sorted(
        {h for h in hits if not (h[0] == "value" and ((h[1], "signature") in seen or (h[1], "argparse") in seen))},
        key=lambda h: (h[1], h[0]),
    )


def main(argv: list[str]) -> int:
    counts: Counter[str] = Counter()
    for path in sorted((ROOT / "bigdecon").rglob("*.py")):
        for kind, line, text in scan(path):
            counts[kind] += 1
            if "--summary" not in argv:
                print(f"{path.relative_to(ROOT)}:{line}: {kind}: {text}")
    print(", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())), f"(total {sum(counts.values())})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
