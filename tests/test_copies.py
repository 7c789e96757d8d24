"""The `# Copied from` markers between model folders: the repository's copies agree, and the checker catches drift."""

from pathlib import Path

from check_copies import check_tree  # utils/ is on pytest's pythonpath (pyproject.toml)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_copies_in_the_repository_agree():
    assert check_tree(REPO_ROOT / "src") == []


def make_tree(tmp_path, copied_body: str, whole_file: str) -> Path:
    source = tmp_path / "hf_ae" / "models" / "a"
    source.mkdir(parents=True)
    (source / "shared.py").write_text("def helper(x):\n    return x + 1\n\n\nclass AThing:\n    pass\n")
    target = tmp_path / "hf_ae" / "models" / "b"
    target.mkdir(parents=True)
    (target / "modeling_b.py").write_text(
        "import os\n\n\n# Copied from hf_ae.models.a.shared.helper\n" + copied_body
        + "\n\n# Copied from hf_ae.models.a.shared.AThing with AThing->BThing\nclass BThing:\n    pass\n"
    )
    (target / "shared.py").write_text("# Copied from hf_ae.models.a.shared\n" + whole_file)
    return tmp_path


def test_checker_accepts_faithful_copies(tmp_path):
    root = make_tree(
        tmp_path, "def helper(x):\n    return x + 1\n", "def helper(x):\n    return x + 1\n\n\nclass AThing:\n    pass\n"
    )
    assert check_tree(root) == []


def test_checker_reports_drift_in_functions_and_files(tmp_path):
    root = make_tree(tmp_path, "def helper(x):\n    return x + 2\n", "def helper(x):\n    return x\n")
    problems = check_tree(root)
    assert len(problems) == 2
    assert any("differs from hf_ae.models.a.shared.helper" in p for p in problems)
    assert any("differs from" in p and p.startswith(str(root / "hf_ae" / "models" / "b" / "shared.py")) for p in problems)


def test_checker_compares_methods_copied_into_another_class(tmp_path):
    source = tmp_path / "hf_ae" / "models" / "a"
    source.mkdir(parents=True)
    (source / "modeling_a.py").write_text("class A:\n    @staticmethod\n    def mix(x):\n        return x * 2\n")
    target = tmp_path / "hf_ae" / "models" / "b"
    target.mkdir(parents=True)
    copy = "class B:\n    # Copied from hf_ae.models.a.modeling_a.A.mix\n    @staticmethod\n    def mix(x):\n        return x * {}\n"
    (target / "modeling_b.py").write_text(copy.format(2))
    assert check_tree(tmp_path) == []
    (target / "modeling_b.py").write_text(copy.format(3))
    assert check_tree(tmp_path) == [f"{target / 'modeling_b.py'}:2: the definition below differs from hf_ae.models.a.modeling_a.A.mix"]


def test_fix_rewrites_drifted_copies_from_their_sources(tmp_path):
    """--fix (make fix-copies): a drifted function, a drifted method in another class (re-indented, with its
    replacements) and a drifted whole file are rewritten from their sources, the code around them left alone."""
    root = make_tree(tmp_path, "def helper(x):\n    return x + 2\n", "def helper(x):\n    return x\n")
    source = tmp_path / "hf_ae" / "models" / "a" / "modeling_a.py"
    source.write_text("class A:\n    @staticmethod\n    def mix(x):\n        return x * 2\n")
    target = tmp_path / "hf_ae" / "models" / "b" / "modeling_c.py"
    target.write_text("class C:\n    # Copied from hf_ae.models.a.modeling_a.A.mix with 2->5\n    @staticmethod\n"
                      "    def mix(x):\n        return x\n\n    def own(self):\n        return 1\n")
    problems = check_tree(root, fix=True)
    assert len(problems) == 3 and all(p.endswith("(fixed)") for p in problems)
    assert check_tree(root) == []
    assert (root / "hf_ae" / "models" / "b" / "modeling_b.py").read_text() == (
        "import os\n\n\n# Copied from hf_ae.models.a.shared.helper\ndef helper(x):\n    return x + 1\n"
        "\n\n# Copied from hf_ae.models.a.shared.AThing with AThing->BThing\nclass BThing:\n    pass\n")
    assert target.read_text() == ("class C:\n    # Copied from hf_ae.models.a.modeling_a.A.mix with 2->5\n"
                                  "    @staticmethod\n    def mix(x):\n        return x * 5\n\n"
                                  "    def own(self):\n        return 1\n")
    assert (root / "hf_ae" / "models" / "b" / "shared.py").read_text() == (
        "# Copied from hf_ae.models.a.shared\ndef helper(x):\n    return x + 1\n\n\nclass AThing:\n    pass\n")


NEUTRAL_MODULES = (
    "modeling_autoencoder", "configuration_autoencoder", "pipeline_autoencoder", "image_processing_autoencoder"
)


def test_every_model_folder_holds_a_checked_copy_of_each_neutral_module():
    """The contract, the config helpers and the pipelines are written once in hf_ae/models/ and copied whole into
    each model folder (the Hub receives the folder alone): a folder without the marker would go unchecked."""
    models = REPO_ROOT / "src" / "hf_ae" / "models"
    folders = sorted(p for p in models.iterdir() if (p / "__init__.py").exists())
    assert len(folders) == 4
    for folder in folders:
        for name in NEUTRAL_MODULES:
            first_line = (folder / f"{name}.py").read_text().splitlines()[0]
            assert first_line == f"# Copied from hf_ae.models.{name}", (folder.name, name)


def test_metric_modules_copy_the_library_measures():
    """The `evaluate` modules compute with checked copies of hf_ae.evaluation.measures, not their own arithmetic."""
    metrics = REPO_ROOT / "src" / "hf_ae" / "evaluation" / "metrics"
    expected = {
        "image_reconstruction": ("psnr", "image_error_measures"),
        "text_reconstruction": ("token_measures",),
    }
    for module, names in expected.items():
        text = (metrics / module / f"{module}.py").read_text()
        for name in names:
            assert f"# Copied from hf_ae.evaluation.measures.{name}\n" in text, (module, name)
