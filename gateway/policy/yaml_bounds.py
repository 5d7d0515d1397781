"""Bounds a policy file must fit before anything is built from it. Pure.

A YAML alias is a pointer: ten lines of nested aliases ("billion laughs") describe 10^9 nodes.
PyYAML's composer keeps them shared, but everything that walks the document (the line index,
pydantic) expands them, and one such file took a gateway to 1.3 GB and a MemoryError on
reload. So the text is bounded first (`MAX_POLICY_BYTES`), then the composed node graph is
measured with aliases expanded, without expanding them: each distinct node's expanded size is
computed once (memoised by identity), which is linear in the file, and the walk stops as soon
as the total passes `MAX_POLICY_NODES`. A node that contains itself (`&a [*a]`) is refused.
A real policy is a few hundred nodes; the bounds leave a thousand times that.
"""

from __future__ import annotations

from typing import Any, Protocol


class _Mark(Protocol):
    line: int


class Node(Protocol):
    """What is read of a PyYAML node (duck-typed: this module does not import yaml)."""

    value: Any  # str (scalar), [node] (sequence), [(key node, value node)] (mapping)
    start_mark: _Mark


MAX_POLICY_BYTES = 1024 * 1024
MAX_POLICY_NODES = 100_000


class TooLarge(ValueError):
    """The policy exceeds a bound; the message says which, and where when it can."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def check_text_size(text: str) -> None:
    check_byte_count(len(text.encode("utf-8", "surrogatepass")))


def check_byte_count(size: int) -> None:
    if size > MAX_POLICY_BYTES:
        raise TooLarge(
            f"the policy is over {MAX_POLICY_BYTES // 2**20} MiB, the most that is read "
            "(a policy is a few KiB: is this the right file?)"
        )


def check_expanded_size(root: Node | None) -> None:
    """Raise TooLarge if `root`, with every alias expanded, has over MAX_POLICY_NODES nodes."""
    if root is None:
        return
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: no recursion limit on deep documents
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            in_progress.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[key] > MAX_POLICY_NODES:
                raise TooLarge(_too_many(sizes[key]), node.start_mark.line + 1)
            continue
        if key in in_progress:
            raise TooLarge("a YAML alias refers to a node that contains it", _line(node))
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise TooLarge("a YAML alias refers to a node that contains it", _line(child))
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if not isinstance(node.value, list):
        return []  # a scalar
    children: list[Node] = []
    for item in node.value:  # a mapping's items are (key, value) pairs
        children.extend(item if isinstance(item, tuple) else (item,))
    return children


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _too_many(count: int) -> str:
    return (
        f"with its aliases expanded the policy has over {count:,} values (at most "
        f"{MAX_POLICY_NODES:,}); YAML aliases (*name) that repeat other aliases multiply: "
        "write the values out instead"
    )
