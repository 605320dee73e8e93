#!/usr/bin/env python3
"""Import cycles and layer violations between the host's modules.

Reads every `crate::...` and `super::...` path in host/src (comments and strings are
ignored; `mod x;` declarations are not imports; paths inside an inline `mod tests { }`
resolve from that inline module), resolves each to the module file it
names, and prints:

- the strongly connected components of the file-level import graph with more than one
  file (each is an import cycle), and of the top-level graph (folders and root files);
- every import that points up the layer table below (a lower layer must not know a
  higher one).

    python3 tools/layers.py            # report
    python3 tools/layers.py --check    # report, exit 1 on any cycle or upward import

The layer table is the one ARCHITECTURE.md shows; keep them together.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "host" / "src"

# Top to bottom. A module may import its own layer and the layers below it. Modules in one
# row share a layer; `main` and `lib` (the crate's faces) may import anything.
LAYERS = [
    ["main", "lib"],
    ["server", "cluster"],
    ["ops", "reload", "scaffold"],
    ["lane"],
    ["document"],
    ["guest", "store"],
    ["net"],
    ["metrics", "config", "routing"],
]


def module_of(path: pathlib.Path) -> tuple:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts == ["lib"] or parts == ["main"]:
        return (parts[0],)
    return tuple(parts)


def strip(source: str) -> str:
    """Removes comments, string and char literals (keeps line structure)."""
    out = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
        elif source.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if source.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif source.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', source[i:i + 10]) and not re.match(r"\w", source[i - 1] if i else " "):
            m = re.match(r'r(#*)"', source[i:])
            end = source.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", source[i:i + 4]) or source.startswith("'\\", i):
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'])'", source[i:])
            i += len(m.group(0)) if m else 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_paths(text: str):
    """Every path in `use` trees (with whether it is a `pub use`) and inline
    `crate::`/`super::`/`self::` paths."""
    for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
        for p in expand(m.group(2).replace("\n", " ")):
            yield p, bool(m.group(1))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::(?:super|\w+))+)", text):
        yield m.group(1), False


def scopes(text: str, here: tuple):
    """The module's text and each inline `mod name { ... }` block's, every one with the
    module path its `super::`/`self::` resolve from (`use super::*` in `mod tests`
    names the file itself, not its parent)."""
    outer, last = [], 0
    for m in re.finditer(r"\bmod\s+(\w+)\s*\{", text):
        if m.start() < last:
            continue  # nested inside a block already taken
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        outer.append(text[last:m.start()])
        yield from scopes(text[m.end():i - 1], here + (m.group(1),))
        last = i
    outer.append(text[last:])
    yield here, "".join(outer)


def expand(tree: str, prefix: str = ""):
    """Expands `a::{b, c::{d}}` into `a::b`, `a::c::d`."""
    tree = tree.strip()
    depth = 0
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                head = tree[:i].rstrip(":").strip()
                inner = tree[i + 1:tree.rindex("}")]
                base = join(prefix, head)
                for part in split_top(inner):
                    yield from expand(part, base)
                return
            depth += 1
    yield join(prefix, re.sub(r"\s+as\s+\w+$", "", tree))


def split_top(inner: str):
    depth, start = 0, 0
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            yield inner[start:i]
            start = i + 1
    if inner[start:].strip():
        yield inner[start:]


def join(a: str, b: str) -> str:
    return f"{a}::{b}" if a and b else a or b


def resolve(path: str, here: tuple, modules: set, reexports: dict):
    """The module file that defines what `path` names, seen from module `here`: through
    `crate::`, `super::`, `self::` or a child module's name, and through the `pub use`
    re-exports of folder modules (`crate::lane::Lane` is defined in `lane::state`)."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = list(here)
        rest = parts
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base.pop()
            rest = rest[1:]
    elif here + (parts[0],) in modules:
        base, rest = list(here), parts
    else:
        return None
    target, k = tuple(base), 0
    while k < len(rest):
        child = target + (rest[k],)
        if child in modules:
            target, k = child, k + 1
        elif (target, rest[k]) in reexports:
            target, k = reexports[(target, rest[k])], k + 1
        else:
            break
    return target if target in modules else None


def top(module: tuple) -> str:
    return module[0]


def layer_of(name: str):
    for i, row in enumerate(LAYERS):
        if name in row:
            return i
    return None


def sccs(graph: dict):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [sorted(c) for c in out if len(c) > 1]


def main() -> int:
    files = sorted(ROOT.rglob("*.rs"))
    modules = {module_of(f): f for f in files}
    texts = {m: strip(f.read_text()) for m, f in modules.items()}
    names = set(modules)
    # What each module re-exports (`pub use child::Item;`), resolved until nothing changes.
    reexports = {}
    for _ in range(5):
        for module, text in texts.items():
            for p, public in use_paths(text):
                if public:
                    target = resolve(p, module, names, reexports)
                    item = re.sub(r"\s+as\s+", " as ", p).split("::")[-1].split(" as ")[-1]
                    if target and target != module and item != "self":
                        reexports[(module, item)] = target
    edges = {m: set() for m in modules}
    for module, text in texts.items():
        for scope, body in scopes(text, module):
            for p, public in use_paths(body):
                if public:
                    continue  # a folder's face: its callers' imports resolve through it
                target = resolve(p, scope, names, reexports)
                if target and target != module:
                    edges[module].add(target)

    name = lambda m: "::".join(m)
    file_cycles = sccs({name(k): {name(t) for t in v} for k, v in edges.items()})
    top_graph = {}
    for k, v in edges.items():
        top_graph.setdefault(top(k), set()).update(top(t) for t in v if top(t) != top(k))
    top_cycles = sccs(top_graph)

    upward, unknown = [], set()
    for k, v in edges.items():
        if top(k) in ("main", "lib"):
            continue
        lk = layer_of(top(k))
        if lk is None:
            unknown.add(top(k))
            continue
        for t in v:
            lt = layer_of(top(t))
            if lt is None:
                unknown.add(top(t))
            elif lt < lk:
                upward.append((name(k), name(t)))

    print(f"{len(modules)} modules, {sum(len(v) for v in edges.values())} imports between them")
    print(f"file-level import cycles: {len(file_cycles)}")
    for c in file_cycles:
        print(f"  {len(c)} files: {', '.join(c)}")
    print(f"top-level import cycles: {len(top_cycles)}")
    for c in top_cycles:
        print(f"  {len(c)} modules: {', '.join(c)}")
    print(f"imports pointing up the layer table: {len(upward)}")
    for a, b in sorted(upward):
        print(f"  {a} -> {b}")
    if unknown:
        print(f"modules missing from the layer table: {', '.join(sorted(unknown))}")
    bad = file_cycles or top_cycles or upward or unknown
    if "--check" in sys.argv[1:] and bad:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
