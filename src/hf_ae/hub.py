"""Share saved models on the Hugging Face Hub.

* [`push_to_hub`] uploads a folder written by `save_pretrained` (config, weights, remote-code `.py`
  files, model card, images, tokenizer/processor files, ...) to a model repo, creating it if needed.
* [`render_model_card`] fills a Jinja2 model-card template and attaches the Hub metadata (library,
  tags, datasets, metrics and `model-index` evaluation results) as the card's YAML header.

Both use `huggingface_hub` only; the Hub endpoint is taken from `HF_ENDPOINT` and the token from the
`token` argument, `HF_TOKEN` or the cached `hf auth login` token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

__all__ = ["EvalResult", "push_to_hub", "render_model_card"]

# Files never worth uploading. `upload_folder` itself always adds `.git/` and `.cache/huggingface/`.
IGNORE_PATTERNS = ("__pycache__", "__pycache__/*", "*/__pycache__", "*/__pycache__/*", "*.pyc")

DEFAULT_COMMIT_MESSAGE = "Upload model with hf_ae"

# Keyword arguments of `render_model_card` that go to `ModelCardData` (the YAML header);
# every other keyword is only available to the template.
CARD_DATA_FIELDS = (
    "base_model",
    "datasets",
    "eval_results",
    "language",
    "library_name",
    "license",
    "license_link",
    "license_name",
    "metrics",
    "model_name",
    "pipeline_tag",
    "tags",
)


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Upload a saved-model folder to a model repo on the Hugging Face Hub.

    The repo is created if it does not exist (`create_repo(exist_ok=True)`); then every file of `folder`,
    subfolders included, is uploaded in one `upload_folder` call, except `.git/`, `__pycache__/` and
    `*.pyc` (and `.cache/huggingface/`, which `huggingface_hub` always skips). Files already on the Hub
    with identical content are not re-committed, and remote files absent from `folder` are kept.
    The local folder is only read, never modified, whether the push succeeds or fails.

    Args:
        folder: Directory written by `save_pretrained`; it must contain a `config.json`.
        repo_id: `"namespace/name"`, or just `"name"` for a repo in the token owner's namespace.
        token: Hub token with write access. Defaults to `HF_TOKEN` or the `hf auth login` token.
        private: Create the repo as private. Has no effect on a repo that already exists.
        commit_message: Commit title; defaults to `"Upload model with hf_ae"`.
        revision: Branch to push to (created from `main` if missing). Defaults to `main`.
        create_pr: Open a pull request against `main` with the upload instead of committing directly.
            Cannot be combined with `revision`.

    Returns:
        The URL of the new commit, or of the pull request when `create_pr=True` (or the URL of the
        latest commit if nothing changed).

    Raises:
        ValueError: `folder` does not exist, is not a directory, or has no `config.json`; or both
            `revision` and `create_pr` are given.
        huggingface_hub.errors.HfHubHTTPError: The Hub refused a request (bad token, no permission, ...).
        httpx2.HTTPError / OSError: The Hub could not be reached.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Cannot push {str(folder)!r} to the Hub: the folder does not exist.")
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"Cannot push {str(folder)!r} to the Hub: it has no config.json. "
            "Save the model with `model.save_pretrained(folder)` first."
        )
    if create_pr and revision not in (None, "main"):
        raise ValueError(
            "`create_pr=True` opens a pull request against `main`; do not pass `revision` with it."
        )

    api = HfApi(token=token)
    # The returned URL carries the full "namespace/name" id, even when `repo_id` had no namespace.
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        revision=None if create_pr else revision,
        create_pr=create_pr,
        ignore_patterns=list(IGNORE_PATTERNS),  # a fresh list: upload_folder extends it in place
    )
    return str(commit.pr_url or commit.commit_url)


def render_model_card(template_path: str | os.PathLike | None, **card_data_and_context: Any) -> ModelCard:
    """Render a model card from a Jinja2 template, with Hub metadata in its YAML header.

    Keyword arguments named like `huggingface_hub.ModelCardData` fields (`base_model`, `datasets`,
    `eval_results`, `language`, `library_name`, `license`, `license_link`, `license_name`, `metrics`,
    `model_name`, `pipeline_tag`, `tags`) build the card metadata; `library_name` defaults to
    `"transformers"`. `eval_results` is a list of `huggingface_hub.EvalResult` and becomes the
    `model-index` block the Hub shows as an evaluation widget; it requires `model_name`.
    All keyword arguments (metadata fields included, e.g. `{{ model_name }}`) are available to the
    template, and the rendered metadata YAML is `{{ card_data }}`. A template should therefore begin with::

        ---
        {{ card_data }}
        ---

    If it has no such header, the metadata is added in front of the rendered text anyway.
    Rendering is fully offline: the card is not validated against the Hub (`card.validate()` needs the
    network). Save it with `card.save(folder / "README.md")` before calling [`push_to_hub`].

    Args:
        template_path: Markdown/Jinja2 template file; `None` uses `huggingface_hub`'s default model card.
        **card_data_and_context: Metadata fields (see above) and extra template variables.

    Returns:
        The rendered `huggingface_hub.ModelCard` (`str(card)` is the README.md text, `card.data` the metadata).

    Raises:
        ValueError: `eval_results` without `model_name`, or `eval_results` that are not `EvalResult`s.
    """
    card_fields = {
        key: card_data_and_context[key] for key in CARD_DATA_FIELDS if key in card_data_and_context
    }
    card_fields.setdefault("library_name", "transformers")
    card_data = ModelCardData(**card_fields)
    # `ModelCardData.to_dict()` folds `model_name` into `model-index`; keep it visible to the template.
    context = {**card_data_and_context, "model_name": card_fields.get("model_name")}
    card = ModelCard.from_template(
        card_data, template_path=None if template_path is None else str(template_path), **context
    )
    if not card.data.to_dict() and card_data.to_dict():
        card.data = card_data  # template without a `{{ card_data }}` YAML header
    return card
