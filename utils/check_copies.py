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
from pathlib import Path

MARKER = re.compile(r"^(\s*)# Copied from (hf_ae(?:\.\w+)+)(?: with (.+))?\s*$")


def module_file(src_root: Path, dotted: str) -> Path | None:
    path = src_root.joinpath(*dotted.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def definition_source(file: Path, name: str) -> str | None:
    """The source lines of top-level `def`/`class` `name` in `file`."""
    text = file.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            start = node.lineno - 1 - len(node.decorator_list)
            return "\n".join(text.splitlines()[start : node.end_lineno])
    return None


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
        module_path, _, name = dotted.rpartition(".")
        source_module = module_file(src_root, module_path)
        if source_module is None:
            problems.append(f"{where}: no module {module_path}")
            continue
        expected = definition_source(source_module, name)
        if expected is None:
            problems.append(f"{where}: {module_path} has no top-level {name}")
            continue
        copied_name = None
        for following in lines[index + 1 :]:
            found = re.match(r"\s*(?:@\S+|(?:async\s+)?def\s+(\w+)|class\s+(\w+))", following)
            if found and (found.group(1) or found.group(2)):
                copied_name = found.group(1) or found.group(2)
                break
        actual = definition_source(file, copied_name) if copied_name else None
        if actual != apply_replacements(expected, replacements):
            problems.append(f"{where}: {copied_name} differs from {dotted}")
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
