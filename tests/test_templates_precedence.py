"""A template folder added to ours (the web UI's ``textual_inversion_templates``) wins name clashes:
the user's own, perhaps edited, ``subject_filewords.txt`` is the one that trains."""

from extension.training.config import TrainConfig
from extension.training.templates import SHIPPED_TEMPLATES, load_template, resolve_template, template_dirs


def test_the_users_template_wins_over_the_bundled_file_of_the_same_name(tmp_path):
    folder = tmp_path / "textual_inversion_templates"
    folder.mkdir()
    (folder / "subject_filewords.txt").write_text("my edited [name], [filewords]\n", encoding="utf-8")
    options = TrainConfig(template="subject_filewords", template_dir=str(folder)).dataset_options(str(tmp_path))
    dirs = template_dirs(options.extra_template_dirs)
    assert resolve_template("subject_filewords", dirs) == folder / "subject_filewords.txt"
    assert load_template(options.template, dirs) == ["my edited [name], [filewords]"]
    # names the folder lacks still come from ours
    assert resolve_template("style", dirs) == SHIPPED_TEMPLATES / "style.txt"
    assert resolve_template("subject_filewords") == SHIPPED_TEMPLATES / "subject_filewords.txt"
