#!/usr/bin/env python3
"""Lists the module graph of one Rust crate and reports its cycles.

    python3 scripts/module_cycles.py crates/cli/src          # one crate
    python3 scripts/module_cycles.py crates/cli/src --edges  # and its edges

The argument is a crate's source folder (the one holding lib.rs or
main.rs). Every file is a module: `foo.rs` and `foo/mod.rs` are `foo`,
`foo/bar.rs` is `foo::bar`; lib.rs (else main.rs) is the crate root; beside
a lib.rs, main.rs and bin/ are binaries of their own and are left out. Inline
`mod name { ... }` blocks count as their file's module, except test modules
(`#[cfg(test)] mod name { ... }`), which are left out: they are not part of
the library, and a test may reach anything it checks.

An edge A -> B is a path in A's code that names module B or an item of it:
`crate::b::x`, `super::x`, `self::b::x`, or `b::x` where `b` is a child
module of A (grouped `use crate::{a, b::c}` included). A name a module
re-exports (`pub use b::Name;` in lib.rs, then `crate::Name` elsewhere) is
followed to the module that defines it; a path that names an item the
root defines itself (`crate::helper`) is an edge to the root. Module
declarations (`mod b;`) are no edges: a parent that only declares its
children does not depend on them. Comments and string literals are
skipped; macros are read as plain code.

Prints every cycle found (strongly connected components of more than one
module, with one loop through each) and exits 1 if there is one.
"""

import re
import sys
from pathlib import Path

ROOT = ()  # the crate root's module path


def module_path(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments_and_strings(text: str) -> str:
    """Blanks comments, string and char literals (keeping newlines)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif m := re.match(r'b?r(#*)"', text[i:]):
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"' or text.startswith('b"', i):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif m := re.match(r"b?'(\\.[^']*|[^'\\])'", text[i:]):
            # A char literal; a lifetime ('a) has no closing quote.
            i += m.end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(tree: str) -> list:
    """`a::{b, c::{d as e}}` -> [("a::b", "b"), ("a::c::d", "e")]: each
    path with the name it brings into scope."""
    tree = re.sub(r"\s+as\s+", "@", tree)  # `d as e` -> `d@e`
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        path, _, alias = tree.partition("@")
        return [(path, alias or path.split("::")[-1])]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rindex("}")]
    parts, level, start = [], 0, 0
    for j, d in enumerate(inner):
        level += d == "{"
        level -= d == "}"
        if d == "," and level == 0:
            parts.append(inner[start:j])
            start = j + 1
    parts.append(inner[start:])
    paths = []
    for part in filter(None, parts):
        for sub, alias in expand_use_tree(part):
            if sub == "self":
                path = prefix.rstrip(":")
                paths.append((path, path.split("::")[-1] if alias == "self" else alias))
            else:
                paths.append((prefix + sub, alias))
    return paths


USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
PATH = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::(?:[A-Za-z_]\w*|\{))+)")


def paths_in(code: str) -> list:
    """Every `a::b::c` path in the code, `use` trees expanded, each with
    its offset."""
    paths = []
    for m in USE.finditer(code):
        paths.extend((m.start(), p) for p, _ in expand_use_tree(m.group(2)))
    # Blanked (same length), so that offsets stay true.
    without_uses = USE.sub(lambda m: " " * len(m.group()), code)
    for m in PATH.finditer(without_uses):
        paths.append((m.start(), m.group(1).rstrip(":{")))
    return paths


def reexports(code: str) -> dict:
    """`pub use path;` of a module: the name it is known by -> the path."""
    found = {}
    for m in USE.finditer(code):
        if m.group(1):
            for path, alias in expand_use_tree(m.group(2)):
                found[alias] = path
    return found


def inline_modules(code: str) -> list:
    """The (start, end) offsets of every inline `mod name { ... }` block."""
    blocks = []
    for m in re.finditer(r"\bmod\s+\w+\s*\{", code):
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += code[i] == "{"
            depth -= code[i] == "}"
            i += 1
        blocks.append((m.start(), i))
    return blocks


def resolve(path: str, here: tuple, modules: set, inline_depth: int = 0, exports=None, seen=()):
    """The module that `path`, written in module `here` (inside
    `inline_depth` inline `mod` blocks, which count as `here`), names (or
    an item of), or None for a path outside the crate."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    head = parts[0]
    if head == "crate":
        base, rest = ROOT, parts[1:]
    elif head in ("super", "self"):
        base, inline = here, inline_depth
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                if inline:
                    inline -= 1
                else:
                    base = base[:-1]
            parts = parts[1:]
        rest = parts
    elif here + (head,) in modules:
        base, rest = here, parts
    else:
        return None  # another crate, std, or an item in scope
    target, item = base, None
    for p in rest:
        if target + (p,) in modules:
            target = target + (p,)
        else:
            item = p
            break
    # `crate::Name` re-exported by the root (`pub use batch::Name;`) is
    # batch's item: the edge goes to where it is defined.
    exported = (exports or {}).get(target, {}).get(item)
    if exported and (target, item) not in seen:
        found = resolve(exported, target, modules, 0, exports, seen + ((target, item),))
        if found is not None:
            return found
    return target


def graph(src: Path) -> dict:
    files = sorted(src.rglob("*.rs"))
    if (src / "lib.rs").exists():
        # main.rs and bin/ are other crates (binaries using the library).
        files = [f for f in files if f != src / "main.rs" and "bin" not in f.relative_to(src).parts[:1]]
    modules = {module_path(src, f) for f in files}
    codes = {f: strip_comments_and_strings(f.read_text()) for f in files}
    exports = {module_path(src, f): reexports(code) for f, code in codes.items()}
    edges = {m: set() for m in modules}
    for f in files:
        here = module_path(src, f)
        code = codes[f]
        blocks = inline_modules(code)
        tests = [(start, end) for start, end in blocks if re.search(r"#\[cfg\(test\)\]\s*$", code[:start])]
        for offset, path in paths_in(code):
            if any(start < offset < end for start, end in tests):
                continue
            depth = sum(start < offset < end for start, end in blocks)
            target = resolve(path, here, modules, depth, exports)
            if target is not None and target != here:
                edges[here].add(target)
    return edges


def cycles(edges: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def loop_through(component: list, edges: dict) -> list:
    """One shortest loop from the component's first module back to it."""
    members = set(component)
    start = component[0]
    previous, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def name(module: tuple) -> str:
    return "::".join(("crate",) + module)


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 1 or not Path(args[0]).is_dir():
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: module_cycles.py CRATE_SRC_DIR [--edges]", file=sys.stderr)
        return 2
    src = Path(args[0])
    edges = graph(src)
    if "--edges" in sys.argv:
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f"{name(m)} -> {name(t)}")
    found = cycles(edges)
    for component in found:
        loop = loop_through(component, edges)
        print(f"{src}: cycle: " + " -> ".join(name(m) for m in loop))
        if len(component) > len(loop) - 1:
            print(f"    (one of the loops among {', '.join(name(m) for m in component)})")
    if not found:
        print(f"{src}: no module cycle ({len(edges)} modules)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
