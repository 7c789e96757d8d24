#!/usr/bin/env python
"""Check that code copied between model folders still matches its source.

Each model folder is what the Hub receives, so it may import only its siblings; code shared between models is
copied and marked (the transformers convention):

* a whole file: first line `# Copied from hf_ae.models.patch_vae.pipeline_autoencoder` -> the rest of the file
  equals that module's file;
* one function or class: `# Copied from hf_ae.models.patch_vae.modeling_patch_vae.slerp` on the line above its
  `def`/`class`, optionally followed by ` with PatchVae->FunnelVae` (replacements applied to the source first)
  -> the definition equals the source definition.

    python utils/check_copies.py            # exit 1 and list the copies that drifted
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


def definition_after(file: Path, line: int) -> str | None:
    """The source of the first definition (at any depth) that starts after line `line` (1-based)."""
    text = file.read_text()
    nodes = [n for n in ast.walk(ast.parse(text)) if isinstance(n, DEFINITIONS)]
    following = [n for n in nodes if n.lineno - len(n.decorator_list) > line]
    if not following:
        return None
    return node_source(text, min(following, key=lambda n: n.lineno))


def apply_replacements(source: str, replacements: str | None) -> str:
    for pair in (replacements or "").split(","):
        if "->" in pair:
            old, new = (part.strip() for part in pair.split("->", 1))
            source = source.replace(old, new)
    return source


def check_file(file: Path, src_root: Path) -> list[str]:
    """Problems with the copies marked in `file` (empty when all agree)."""
    problems = []
    lines = file.read_text().splitlines()
    for index, line in enumerate(lines):
        match = MARKER.match(line)
        if not match:
            continue
        _, dotted, replacements = match.groups()
        where = f"{file}:{index + 1}"
        source_module = module_file(src_root, dotted)
        if index == 0 and source_module is not None:  # a whole-file copy
            expected = apply_replacements(source_module.read_text(), replacements).rstrip("\n")
            if "\n".join(lines[1:]).rstrip("\n") != expected:
                problems.append(f"{where}: differs from {source_module}")
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
        actual = definition_after(file, index + 1)
        if actual != apply_replacements(expected, replacements):
            problems.append(f"{where}: the definition below differs from {dotted}")
    return problems


def check_tree(src_root: Path) -> list[str]:
    problems = []
    for file in sorted((src_root / "hf_ae").rglob("*.py")):
        problems += check_file(file, src_root)
    return problems


def main() -> int:
    problems = check_tree(Path(__file__).resolve().parents[1] / "src")
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
