"""The code's shape, checked (issue 13): every import points down, none hides in a function to
dodge a cycle, and only the written list of modules calls the one push function.

The layer order itself lives in `.importlinter` (import-linter's `layers` contracts, run by
`make test` as `lint-imports`); these tests add what a layers contract cannot say: no cycle
anywhere in the graph (not only between listed layers), and no import statement inside a
function body, where an upward import would be invisible to both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dashboard", "jobs", "notifications", "frontend")

# Function-level imports of our own code that do not dodge a cycle: Django's documented place to
# connect signal receivers (AppConfig.ready), and data migrations, which must not import app code
# at module level (they run against historical models).
FUNCTION_IMPORTS_ALLOWED = ("apps.py", "/migrations/")

# Zulip's rule (design.md §7): one push function, and a written list of who may call it. The
# stage that changes a row pushes it; nothing else publishes to the channel layer.
PUSH_CALLERS = {
    "jobs.states",  # a job row's change (the one version bump) pushes the job
    "jobs.reporter",  # live progress and log lines between row writes
    "notifications.inbox",  # a stored notification, the unread count
    "notifications.realtime.presence",  # closing and re-checking sockets
    "dashboard.celery",  # a pool process flushes what it published before it exits
    "notifications.apps",  # at setup: a stopped script flushes what it published before it exits
}


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_import_graph_has_no_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (each a set of modules importing each other):\n" + "\n".join(
        " ↔ ".join(cycle) for cycle in cycles
    )


def _python_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _imports_our_code(node: ast.AST) -> bool:
    """An import of Runboard's own packages (a library imported late, e.g. an optional backend,
    cannot hide a cycle of ours)."""
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in PACKAGES for alias in node.names)
    return False


def test_no_import_of_our_code_hides_inside_a_function():
    hidden = []
    for path in _python_files():
        relative = str(path.relative_to(ROOT))
        if any(allowed in "/" + relative for allowed in FUNCTION_IMPORTS_ALLOWED):
            continue
        tree = ast.parse(path.read_text(), filename=relative)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    if _imports_our_code(inner):
                        hidden.append(f"{relative}:{inner.lineno} (in {node.name})")
    assert not hidden, "imports inside functions (move them to the top; if that makes a cycle, the "
    "code is in the wrong layer):\n" + "\n".join(sorted(set(hidden)))


def test_only_the_written_list_of_modules_calls_the_push_function():
    callers = _graph().find_modules_that_directly_import("notifications.push")
    assert callers <= PUSH_CALLERS, f"outside the rule: {sorted(callers - PUSH_CALLERS)}"
