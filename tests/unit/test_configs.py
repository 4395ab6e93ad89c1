"""Every shipped YAML composes and resolves: each primary config with each option of every group it uses,
and its own experiments (named `<entry point>_*`): no YAML goes untested."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"
PRIMARY = sorted(path.stem for path in CONF.glob("*.yaml"))
# Values a user must give (???) that other values interpolate, so resolution needs them.
REQUIRED = {("task", "paradigm"): ["task.name=sva_pp"]}


def options(group: str) -> list[str]:
    return sorted(str(path.relative_to(CONF / group).with_suffix("")) for path in (CONF / group).rglob("*.yaml"))


def groups_used(primary: str) -> list[str]:
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / f"{primary}.yaml")).get("defaults", [])
    names = [next(iter(entry)) for entry in defaults if isinstance(entry, dict)]
    return [name.removeprefix("override ").lstrip("/") for name in names]


def cases():
    for primary in PRIMARY:
        for group in groups_used(primary):
            if group == "hydra" or not (CONF / group).is_dir():
                continue
            for option in options(group):
                if group == "experiment" and not option.startswith(f"{primary}_"):
                    continue
                yield pytest.param(primary, group, option, id=f"{primary}-{group}={option}")


CASES = list(cases())


@pytest.mark.parametrize("primary, group, option", CASES)
def test_option_composes_and_resolves(primary, group, option):
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=primary, overrides=overrides, return_hydra_config=True)
    assert cfg.task_name == primary, f"{primary}.yaml must set task_name: {primary} (the run directory uses it)"
    HydraConfig.instance().set_config(cfg)
    try:
        OmegaConf.set_struct(cfg, False)
        del cfg["hydra"]
        # Raises on a broken interpolation; values left at ??? are the user's to supply.
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    finally:
        HydraConfig.instance().cfg = None
    assert resolved["paths"]["cache_dir"]


def test_every_shipped_yaml_is_composed_somewhere():
    covered = {case.values[1:] for case in CASES}
    shipped = {
        (str(path.parent.relative_to(CONF)), path.stem)
        for path in CONF.rglob("*.yaml")
        if path.parent != CONF and path.parent.relative_to(CONF).parts[0] not in {"hydra"}
    }
    assert shipped - covered == set()


def target_nodes(node, path=""):
    """(path, node) of every `_target_` node in a resolved config."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
            return
        for key, value in node.items():
            yield from target_nodes(value, f"{path}.{key}" if path else str(key))


def instantiate_cases():
    for primary in PRIMARY:
        for group in ("trainer", "callbacks", "logger"):
            if group in groups_used(primary):
                for option in options(group):
                    yield pytest.param(primary, group, option, id=f"{primary}-{group}={option}")


@pytest.mark.parametrize("primary, group, option", list(instantiate_cases()))
def test_target_nodes_instantiate(primary, group, option, tmp_path):
    """Every `_target_` node of the composed config builds its object (lightning-hydra-template style): a class path
    or argument that no longer exists fails here, not at the end of a run. GPU trainers are built where a GPU is."""
    import torch
    from hydra.utils import instantiate

    overrides = [f"{group}={option}", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name=primary, overrides=overrides), resolve=True, throw_on_missing=False)
    nodes = dict(target_nodes(cfg))
    if group == "trainer":
        assert "trainer" in nodes
        if cfg["trainer"].get("accelerator") == "gpu" and not torch.cuda.is_available():
            nodes.pop("trainer")
    for path, node in nodes.items():
        built = instantiate(node)
        if node.get("_partial_"):  # an optimizer factory: called with the parameters it will train
            built = built([torch.nn.Parameter(torch.zeros(2))])
        assert built is not None, path


def test_every_config_ships_with_the_package():
    """Library calls compose from gradspace/conf (a link to conf/ here, a copy in a wheel): the package-data
    patterns in pyproject.toml must take every YAML file, at every depth."""
    import fnmatch

    import tomllib

    import gradspace

    package_conf = Path(gradspace.__file__).parent / "conf"
    assert package_conf.resolve() == CONF.resolve()
    patterns = tomllib.loads((CONF.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gradspace"]
    shipped = [str(path.relative_to(package_conf.parent)) for path in package_conf.rglob("*.yaml")]
    missing = [name for name in shipped if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert shipped and not missing
