"""Safe YAML reading for packs: size cap, alias-bomb guard, and a line number for every node.

Only ``yaml.compose`` with the safe loader is used; construction goes through
``SafeConstructor``, so no tag can run code. Every failure becomes a :class:`PackIssue`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from stablenew.errors import PackIssue

MAX_PACK_BYTES = 1024 * 1024
# Nodes a document may expand to once aliases are followed. A real pack has a few hundred;
# a "billion laughs" document has billions, which this catches without expanding it.
MAX_EXPANDED_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlDocument:
    """A parsed pack file: the plain data, and the line where each key or item starts."""

    data: Any
    lines: dict[Loc, int]


class YamlProblem(Exception):
    """Internal: carries the reader's issues out to the loader."""

    def __init__(self, *issues: PackIssue) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def read_pack_bytes(path: Path) -> bytes:
    """The file's bytes, refusing anything over :data:`MAX_PACK_BYTES` without reading it all."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PACK_BYTES + 1)
    except OSError as e:
        raise YamlProblem(PackIssue(str(path), None, "", f"a readable file ({e.strerror})")) from e
    if len(raw) > MAX_PACK_BYTES:
        raise YamlProblem(
            PackIssue(str(path), None, "", f"a pack file of at most {MAX_PACK_BYTES} bytes (1 MiB)")
        )
    return raw


def parse_yaml(raw: bytes, path: str) -> YamlDocument:
    """Compose, guard against alias abuse, construct safely, and map every node to its line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlProblem(PackIssue(path, None, "", f"UTF-8 text ({e.reason})")) from e
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise YamlProblem(PackIssue(path, 1, "", "a YAML mapping (the file is empty)"))
        _check_expansion(root, path)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise YamlProblem(PackIssue(path, line, "", f"valid YAML ({problem})")) from e
    except yaml.YAMLError as e:
        raise YamlProblem(PackIssue(path, None, "", f"valid YAML ({e})")) from e
    finally:
        loader.dispose()
    if not isinstance(root, MappingNode):
        raise YamlProblem(
            PackIssue(path, root.start_mark.line + 1, "", "a mapping of pack keys at the top level")
        )
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    duplicates = list(_map_lines(root, (), lines))
    if duplicates:
        raise YamlProblem(
            *(
                PackIssue(path, line, dotted(loc), "a key given only once")
                for loc, line in duplicates
            )
        )
    return YamlDocument(data=data, lines=lines)


def _check_expansion(root: Node, path: str) -> None:
    """Count nodes as if every alias were expanded, in linear time, refusing cycles."""
    sizes: dict[int, int] = {}
    on_stack: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_stack:
            raise YamlProblem(
                PackIssue(path, node.start_mark.line + 1, "", "no recursive anchors/aliases")
            )
        on_stack.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        on_stack.discard(key)
        sizes[key] = total
        if total > MAX_EXPANDED_NODES:
            raise YamlProblem(
                PackIssue(
                    path,
                    node.start_mark.line + 1,
                    "",
                    f"at most {MAX_EXPANDED_NODES} nodes once aliases are expanded "
                    "(alias/anchor abuse, e.g. a 'billion laughs' document)",
                )
            )
        return total

    size(root)


def _map_lines(node: Node, loc: Loc, lines: dict[Loc, int]) -> Iterator[tuple[Loc, int]]:
    """Record the line of every key and item under ``loc``; yield duplicate keys."""
    if isinstance(node, SequenceNode):
        for i, child in enumerate(node.value):
            lines[(*loc, i)] = child.start_mark.line + 1
            yield from _map_lines(child, (*loc, i), lines)
    elif isinstance(node, MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merged = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in merged:
                    if isinstance(source, MappingNode):
                        for k, v in source.value:
                            if isinstance(k, ScalarNode) and (*loc, k.value) not in lines:
                                lines[(*loc, k.value)] = k.start_mark.line + 1
                                yield from _map_lines(v, (*loc, k.value), lines)
                continue
            if not isinstance(key_node, ScalarNode):
                continue
            key = key_node.value
            child_loc = (*loc, key)
            if key in seen:
                yield child_loc, key_node.start_mark.line + 1
                continue
            seen.add(key)
            lines[child_loc] = key_node.start_mark.line + 1
            yield from _map_lines(value_node, child_loc, lines)


def dotted(loc: Loc) -> str:
    """``("prompts", 0, "text")`` → ``prompts[0].text``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
