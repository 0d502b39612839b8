"""The README stays true to the code: commands, algorithm parameters, CLI, models."""

import yaml

from cloudrm_engine.cli import build_parser
from cloudrm_engine.models import count_parameters, list_models
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_two_commands():
    assert "scripts/demo" in README and "scripts/test" in README
    assert "scripts/test" in (REPO / ".ci" / "run").read_text()


def test_every_algorithm_parameter_is_documented():
    help_ = yaml.safe_load((REPO / "cloudrm_plugin" / "help" / "algorithms.yaml").read_text())
    for alg, spec in help_.items():
        assert f"cloudrm:{alg}" in README
        for key in spec["parameters"]:
            assert f"| `{key}` |" in README, key


def test_every_cli_command_and_model_is_documented():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"cloudrm {name}" in README, name
    for model in list_models():
        assert f"| `{model}` | {count_parameters(model):,} |" in README
