#!/usr/bin/env python3
"""Check that every relative link in README.md and docs/*.md resolves.

A link `](path.md#anchor)` must name an existing file and, when it has an
anchor, a heading of that file (GitHub's anchor rules: lowercase, spaces to
'-', punctuation other than '-' and '_' removed, repeats numbered -1, -2).
Links to other files (images, scripts, configs) must name an existing path.
Run from anywhere: python3 scripts/check_doc_links.py; exit status 1 lists
the broken links.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def strip_code(lines):
    """The lines outside fenced code blocks, with their 1-based numbers."""
    inside = False
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            yield number, line


def slug(heading):
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, '_', '-', ' '
    return text.replace(" ", "-")


def anchors(path):
    seen = {}
    result = set()
    for _, line in strip_code(path.read_text(encoding="utf-8").splitlines()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def main():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    cache = {}
    broken = []
    checked = 0
    for source in files:
        lines = source.read_text(encoding="utf-8").splitlines()
        for number, line in strip_code(lines):
            line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                    continue
                checked += 1
                path_part, _, anchor = target.partition("#")
                path = (source.parent / path_part).resolve() if path_part else source
                where = f"{source.relative_to(ROOT)}:{number}: {target}"
                if not path.exists():
                    broken.append(f"{where}: no such file")
                    continue
                if anchor and path.suffix == ".md":
                    if path not in cache:
                        cache[path] = anchors(path)
                    if anchor not in cache[path]:
                        broken.append(f"{where}: no heading with this anchor")
    for line in broken:
        print(line)
    print(f"{checked} links checked in {len(files)} files, {len(broken)} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
