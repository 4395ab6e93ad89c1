"""Dataclass configs round-trip with the YAML that ships them: every YAML key is a field and back again."""

from dataclasses import asdict, fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradspace.ftgd.masks import MaskConfig
from gradspace.synth.pretrain import PretrainConfig
from gradspace.synth.world import WorldConfig
from gradspace.utils.run_config import plain_section

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


def normalised(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("yaml_file, section, config_class", [
    ("model/synth-1m.yaml", "world", WorldConfig),
    ("model/synth-1m.yaml", "pretrain", PretrainConfig),
    ("model/synth-4m.yaml", "world", WorldConfig),
    ("model/synth-4m.yaml", "pretrain", PretrainConfig),
    ("train.yaml", "ftgd.mask", MaskConfig),
])
def test_shipped_section_round_trips(yaml_file, section, config_class):
    shipped = plain_section(OmegaConf.select(OmegaConf.load(CONF / yaml_file), section))
    config = config_class(**shipped)
    assert {key: normalised(value) for key, value in asdict(config).items()} == shipped
    assert config_class(**asdict(config)) == config
    assert set(shipped) == {field.name for field in fields(config_class)}, "a field is missing from the YAML"


def test_synth_1m_yaml_is_the_pretrain_default():
    shipped = plain_section(OmegaConf.load(CONF / "model" / "synth-1m.yaml").pretrain)
    assert PretrainConfig(**shipped) == PretrainConfig()
