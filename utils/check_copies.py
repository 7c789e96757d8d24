#!/usr/bin/env python
"""Check that code copied between model folders still matches its source.

Each model folder is what the Hub receives, so it may import only its siblings; code shared between models is
copied and marked (the transformers convention):

* a whole file: first line `# Copied from hf_ae.models.pipeline_autoencoder` -> the rest of the file
  equals that module's file;
* one function or class: `# Copied from hf_ae.models.patch_vae.modeling_patch_vae.slerp` on the line above its
  `def`/`class`, optionally followed by ` with PatchVae->FunnelVae` (replacements applied to the source first)
  -> the definition equals the source definition.

    python utils/check_copies.py            # exit 1 and list the copies that drifted
    python utils/check_copies.py --fix      # rewrite every drifted copy from its source (make fix-copies)
"""

import ast
import re
import sys
import textwrap
from pathlib import Path

MARKER = re.compile(r"^(\s*)# Copied from (hf_ae(?:\.\w+)+)(?: with (.+))?\s*$")


def module_file(src_root: Path, dotted: str) -> Path | None:
    path = src_root.joinpath(*dotted.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def node_source(text: str, node) -> str:
    """A definition's lines (decorators included), dedented so that a method compares equal wherever it sits."""
    start = node.lineno - 1 - len(node.decorator_list)
    return textwrap.dedent("\n".join(text.splitlines()[start : node.end_lineno]))


def definition_source(file: Path, name: str) -> str | None:
    """The source of `def`/`class` `name` in `file`: top-level, or `Class.method` one class deep."""
    text = file.read_text()
    body = ast.parse(text).body
    *classes, name = name.split(".")
    for class_name in classes:
        found = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
        if found is None:
            return None
        body = found.body
    for node in body:
        if isinstance(node, DEFINITIONS) and node.name == name:
            return node_source(text, node)
    return None


def node_after(text: str, line: int):
    """The first definition (at any depth) that starts after line `line` (1-based), or None."""
    nodes = [n for n in ast.walk(ast.parse(text)) if isinstance(n, DEFINITIONS)]
    following = [n for n in nodes if n.lineno - len(n.decorator_list) > line]
    return min(following, key=lambda n: n.lineno) if following else None


def apply_replacements(source: str, replacements: str | None) -> str:
    for pair in (replacements or "").split(","):
        if "->" in pair:
            old, new = (part.strip() for part in pair.split("->", 1))
            source = source.replace(old, new)
    return source


def check_file(file: Path, src_root: Path, fix: bool = False) -> list[str]:
    """Problems with the copies marked in `file` (empty when all agree). With `fix`, each drifted copy is rewritten
    from its source (a definition re-indented to its place) and still reported, as fixed."""
    problems = []
    lines = file.read_text().splitlines()
    fixes = []  # (first line index, end line index, new lines) of the definitions to rewrite
    for index, line in enumerate(lines):
        match = MARKER.match(line)
        if not match:
            continue
        indent, dotted, replacements = match.groups()
        where = f"{file}:{index + 1}"
        source_module = module_file(src_root, dotted)
        if index == 0 and source_module is not None:  # a whole-file copy
            expected = apply_replacements(source_module.read_text(), replacements).rstrip("\n")
            if "\n".join(lines[1:]).rstrip("\n") != expected:
                problems.append(f"{where}: differs from {source_module}" + (" (fixed)" if fix else ""))
                if fix:
                    file.write_text(lines[0] + "\n" + expected + "\n")
                    return problems  # the whole file is its source: nothing else in it to check
            continue
        # the module is the longest dotted prefix that is a file; the rest names a definition (or Class.method)
        parts = dotted.split(".")
        split = next((i for i in range(len(parts) - 1, 0, -1) if module_file(src_root, ".".join(parts[:i]))), None)
        if split is None:
            problems.append(f"{where}: no module for {dotted}")
            continue
        module_path, name = ".".join(parts[:split]), ".".join(parts[split:])
        expected = definition_source(module_file(src_root, module_path), name)
        if expected is None:
            problems.append(f"{where}: {module_path} has no definition {name}")
            continue
        text = "\n".join(lines)
        node = node_after(text, index + 1)
        wanted = apply_replacements(expected, replacements)
        if node is None or node_source(text, node) != wanted:
            problems.append(f"{where}: the definition below differs from {dotted}" + (" (fixed)" if fix else ""))
            if fix and node is not None:
                start = node.lineno - 1 - len(node.decorator_list)
                fixes.append((start, node.end_lineno, [indent + row if row else "" for row in wanted.splitlines()]))
    if fixes:
        for start, end, new_lines in sorted(fixes, reverse=True):  # bottom up: earlier line numbers stay valid
            lines[start:end] = new_lines
        file.write_text("\n".join(lines) + "\n")
    return problems


def check_tree(src_root: Path, fix: bool = False) -> list[str]:
    """Problems with every marked copy under src_root/hf_ae. With `fix`, drifted copies are rewritten, repeating
    until none drifts (a copy of a copy follows its source's fix on the next pass); the problems of the first pass
    are returned."""
    problems = [p for file in sorted((src_root / "hf_ae").rglob("*.py")) for p in check_file(file, src_root, fix)]
    for _ in range(5 if fix else 0):
        if not [p for file in sorted((src_root / "hf_ae").rglob("*.py")) for p in check_file(file, src_root, fix)]:
            break
    return problems


def main(argv: list[str] | None = None) -> int:
    fix = "--fix" in (sys.argv[1:] if argv is None else argv)
    src_root = Path(__file__).resolve().parents[1] / "src"
    problems = check_tree(src_root, fix)
    for problem in problems:
        print(problem)
    if fix:
        left = check_tree(src_root)
        for problem in left:
            print(f"not fixed: {problem}")
        return 1 if left else 0
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
