"""Forge's tab defaults (extension/forge/options.py)."""

from extension.forge.options import host_template_dir
from extension.training.config import ConfigError, TrainConfig


def test_missing_host_template_folder_is_not_offered(tmp_path):
    # Forge's --textual-inversion-templates-dir default: a folder Forge no longer ships
    assert host_template_dir(str(tmp_path / "textual_inversion_templates")) == ""


def test_existing_host_template_folder_is_offered(tmp_path):
    assert host_template_dir(str(tmp_path)) == str(tmp_path)


def test_no_option_means_no_folder():
    assert host_template_dir(None) == ""
    assert host_template_dir("") == ""


def _template_problems(template_dir: str, tmp_path) -> list[str]:
    config = TrainConfig(
        name="cat", data=str(tmp_path), template_dir=template_dir, embeddings_dir=str(tmp_path / "emb")
    )
    try:
        config.validate()
    except ConfigError as e:
        return [p for p in e.problems if "template folder" in p]
    return []


def test_the_default_passes_the_runs_template_check(tmp_path):
    missing = str(tmp_path / "textual_inversion_templates")
    assert _template_problems(missing, tmp_path)  # what Forge's option value alone does
    assert _template_problems(host_template_dir(missing), tmp_path) == []
