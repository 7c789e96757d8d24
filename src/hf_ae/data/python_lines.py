"""``python-lines``: single lines of Python source from the running interpreter's standard library.

Rules (see :func:`build_python_lines`):

* files: every ``.py`` under ``sysconfig.get_paths()["stdlib"]``, walked with ``os.walk`` in sorted order,
  skipping ``site-packages``, ``__pycache__``, test folders (``test``, ``tests``, ``idle_test``, ``test_*``,
  ``*_tests``), top-level entries that are not importable module names (e.g. ``config-3.11-x86_64-linux-gnu``,
  ``lib-dynload``) and files that are not valid UTF-8;
* lines: stripped, 8-125 characters, not starting with "#", accepted by ``ast.parse`` on their own,
  de-duplicated (the first occurrence in walk order wins);
* label: the top-level module, the first component of the path relative to the stdlib (".py" stripped);
* split: by file, a file is test when ``zlib.crc32(path.encode()) % 100 < test_size * 100``.

The full line table (before the split) is cached with ``Dataset.save_to_disk`` under
``$HF_AE_CACHE`` (default ``~/.cache/hf_ae``) in ``python-lines-<python version>``.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import shutil
import sysconfig
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np

from ._common import check_test_size, finish_splits, text_features

MIN_LINE_LENGTH = 8
MAX_LINE_LENGTH = 125
TEST_DIR_NAMES = frozenset({"test", "tests", "idle_test"})
SKIPPED_DIR_NAMES = frozenset({"site-packages", "__pycache__"})

# Bump when the extraction rules change, so caches built by older code are rebuilt.
BUILD_VERSION = 1
BUILD_INFO_FILE = "hf_ae_build.json"


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_test_dir(name: str) -> bool:
    """True for test folders: ``test``, ``tests``, ``idle_test``, ``test_*`` and ``*_tests``."""
    return name in TEST_DIR_NAMES or name.startswith("test_") or name.endswith("_tests")


def iter_stdlib_files(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the ``.py`` files kept, in sorted ``os.walk`` order (see module docstring)."""
    for directory, dir_names, file_names in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        at_top = relative_dir == Path(".")
        # Pruning dir_names in place stops os.walk descending into them; sorting fixes the walk order.
        dir_names[:] = sorted(
            name for name in dir_names
            if name not in SKIPPED_DIR_NAMES and not is_test_dir(name) and (not at_top or name.isidentifier())
        )
        for file_name in sorted(file_names):
            if not file_name.endswith(".py"):
                continue
            if at_top and not file_name[: -len(".py")].isidentifier():
                continue
            yield (relative_dir / file_name).as_posix()


def module_of(relative_path: str) -> str:
    """Top-level module of a stdlib-relative path: "asyncio/events.py" -> "asyncio", "os.py" -> "os"."""
    first = relative_path.split("/", 1)[0]
    return first[: -len(".py")] if first.endswith(".py") else first


def is_kept_line(line: str) -> bool:
    """Length 8-125, not a comment, and parses on its own (``line`` is already stripped)."""
    if not MIN_LINE_LENGTH <= len(line) <= MAX_LINE_LENGTH or line.startswith("#"):
        return False
    try:
        ast.parse(line)
    except (SyntaxError, ValueError):  # ValueError: e.g. null bytes
        return False
    return True


def build_python_lines(root: Path | None = None) -> datasets.Dataset:
    """Extract the line table from the stdlib at ``root`` (default: the running interpreter's).

    Returns:
        A Dataset with ``text`` (the line), ``label`` (ClassLabel of top-level modules, sorted names) and
        ``path`` (stdlib-relative file path), rows in walk order.
    """
    root = root or stdlib_root()
    seen: set[str] = set()
    texts: list[str] = []
    paths: list[str] = []
    undecodable = 0
    with warnings.catch_warnings():
        # ast.parse warns about e.g. invalid escape sequences in string literals; those lines are still valid.
        warnings.simplefilter("ignore")
        for relative_path in iter_stdlib_files(root):
            try:
                source = (root / relative_path).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                undecodable += 1
                continue
            for raw_line in source.splitlines():
                line = raw_line.strip()
                if line in seen:
                    continue
                # Remember rejected lines too: an identical later line would be rejected again.
                seen.add(line)
                if is_kept_line(line):
                    texts.append(line)
                    paths.append(relative_path)
    modules = [module_of(path) for path in paths]
    names = sorted(set(modules))
    index = {name: i for i, name in enumerate(names)}
    description = (
        f"python-lines: {len(texts)} unique single lines of Python {platform.python_version()} standard library "
        f"source from {len(set(paths))} files ({undecodable} non-UTF-8 files skipped)."
    )
    features = text_features(names, path=datasets.Value("string"))
    return datasets.Dataset.from_dict(
        {"text": texts, "label": [index[module] for module in modules], "path": paths},
        features=features,
        info=datasets.DatasetInfo(description=description, features=features),
    )


def cache_root() -> Path:
    """``$HF_AE_CACHE`` or ``~/.cache/hf_ae``."""
    return Path(os.environ.get("HF_AE_CACHE", Path.home() / ".cache" / "hf_ae")).expanduser()


def _build_info() -> dict:
    return {"build_version": BUILD_VERSION, "stdlib": str(stdlib_root()), "python": platform.python_version()}


def _load_cached(cache_dir: Path) -> datasets.Dataset | None:
    """The cached table, or None when absent, built by other rules / another stdlib, or unreadable."""
    try:
        if json.loads((cache_dir / BUILD_INFO_FILE).read_text()) != _build_info():
            return None
        return datasets.load_from_disk(str(cache_dir))
    except (OSError, ValueError):  # missing/corrupt files, bad JSON
        return None


def load_python_lines_table(use_cache: bool = True) -> datasets.Dataset:
    """The full line table (before the split), from the cache when valid, else built (and cached).

    The cache is written to a temporary directory next to the final one and renamed into place, so a reader
    never sees a half-written cache and concurrent builders do not corrupt each other. If the cache directory
    cannot be written, the freshly built table is returned with a warning.
    """
    if not use_cache:
        return build_python_lines()
    cache_dir = cache_root() / f"python-lines-{platform.python_version()}"
    cached = _load_cached(cache_dir)
    if cached is not None:
        return cached
    table = build_python_lines()
    try:
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        temp_dir = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-", dir=cache_dir.parent))
        try:
            table.save_to_disk(str(temp_dir))
            (temp_dir / BUILD_INFO_FILE).write_text(json.dumps(_build_info()))
            if cache_dir.exists():  # stale or unreadable: move it aside (atomic), then delete it
                stale_dir = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}-stale-", dir=cache_dir.parent))
                os.replace(cache_dir, stale_dir / "old")
                shutil.rmtree(stale_dir, ignore_errors=True)
            os.replace(temp_dir, cache_dir)
        except OSError:
            # Typically another process renamed its cache into place first; use theirs if it is valid.
            shutil.rmtree(temp_dir, ignore_errors=True)
            cached = _load_cached(cache_dir)
            if cached is not None:
                return cached
            raise
    except OSError as error:
        warnings.warn(f"could not cache python-lines under {cache_dir}: {error}", stacklevel=2)
        return table
    # Return the memory-mapped copy, like a cache hit does.
    reloaded = _load_cached(cache_dir)
    return reloaded if reloaded is not None else table


def load_python_lines_dataset(*, test_size: float = 0.2, seed: int = 0, max_train_samples: int | None = None,
                              max_eval_samples: int | None = None, use_cache: bool = True) -> datasets.DatasetDict:
    """``python-lines`` split by file: ``text``, ``label`` (top-level module) and ``path`` (source file).

    Args:
        test_size: a file is test when ``zlib.crc32(path.encode()) % 100 < test_size * 100``; the fraction of
            files (not lines) is only roughly ``test_size``.
        seed: rows of each split are put in a fixed random order with this seed, so the first N rows sample
            all modules rather than the alphabetically first files; the split itself does not depend on it.
        max_train_samples, max_eval_samples: keep only the first N rows of each split.
        use_cache: read/write the cached line table (see :func:`load_python_lines_table`).
    """
    check_test_size(test_size)
    table = load_python_lines_table(use_cache=use_cache)
    # The table is small (~80k short rows): work on plain lists and build contiguous in-memory splits, which is
    # much faster than select() + flatten_indices() and never writes index files into the shared cache.
    columns = table.to_dict()
    is_test = np.array([zlib.crc32(path.encode()) % 100 < test_size * 100 for path in columns["path"]])
    rng = np.random.default_rng(seed)
    splits = {}
    for split_name, mask in (("train", ~is_test), ("test", is_test)):
        indices = rng.permutation(np.flatnonzero(mask))
        splits[split_name] = datasets.Dataset.from_dict(
            {name: [values[i] for i in indices] for name, values in columns.items()},
            features=table.features,
            info=table.info.copy(),
        )
    what = (
        f"{table.info.description} Columns: text (the stripped line; 8-125 chars, not a comment, parses with "
        f"ast.parse alone, unique), label (top-level module), path (file relative to the stdlib). Test folders, "
        f"site-packages and __pycache__ excluded. Split by file: crc32(path) % 100 < {test_size * 100:g} is test; "
        f"rows shuffled with seed {seed}."
    )
    return finish_splits(splits["train"], splits["test"], what=what, max_train_samples=max_train_samples,
                         max_eval_samples=max_eval_samples)
