"""Every YAML document the tool reads (catalogs, run configs) fails in one line that says where."""

from __future__ import annotations

from pathlib import Path

import pytest

from stefaland.errors import StefaLandError
from stefaland.finetune.config import load_config as load_finetune_config
from stefaland.k8s.submit import read_run_config
from stefaland.yaml_mapping import load_mapping

BROKEN = "train:\n  epochs: 3\n  lr: [1, 2\n"  # an unclosed flow sequence


def test_a_mapping_is_returned_and_an_empty_document_is_empty() -> None:
    assert load_mapping(b"train:\n  epochs: 3\n", "x.yaml", "a mapping") == {"train": {"epochs": 3}}
    assert load_mapping("", "x.yaml", "a mapping") == {}
    assert load_mapping("# only a comment\n", "x.yaml", "a mapping") == {}


def test_a_syntax_error_is_one_line_with_line_and_column() -> None:
    with pytest.raises(StefaLandError) as caught:
        load_mapping(BROKEN, "run.yaml", "a mapping")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("run.yaml line 4 column 1: YAML error: ")


def test_a_list_at_the_top_level_says_what_was_expected() -> None:
    with pytest.raises(StefaLandError, match=r"^run\.yaml: a mapping of sections$"):
        load_mapping("- a\n- b\n", "run.yaml", "a mapping of sections")


@pytest.mark.parametrize("read", [load_finetune_config, read_run_config], ids=["finetune", "submit"])
def test_config_readers_name_the_file_and_line(read, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(StefaLandError) as caught:
        read(str(path))
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path} line 4 column 1: YAML error")
    path.write_text("- a list\n")
    with pytest.raises(StefaLandError, match="mapping"):
        read(str(path))
