"""Hydra launcher configs: each mirrors its plugin's schema, composes with every entry point, and really launches.

The files in conf/hydra/launcher/ replace the plugins' own configs of the same name, so a missing or misspelt field
would only show when a sweep is submitted; these tests catch it here.
"""

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

pytestmark = [
    pytest.mark.unit,
    # Expected: our files share the plugins' names on purpose, so Hydra validates them against the plugins' schemas.
    pytest.mark.filterwarnings("ignore:(?s).*is validated against ConfigStore schema with the same name"),
]

CONF = Path(__file__).resolve().parents[2] / "conf"
LAUNCHERS = sorted(path.stem for path in (CONF / "hydra" / "launcher").glob("*.yaml"))
PRIMARY = sorted(path.stem for path in CONF.glob("*.yaml"))

joblib_plugin = pytest.importorskip("hydra_plugins.hydra_joblib_launcher.config", reason="needs pip install -e '.[launchers]'")
submitit_plugin = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config", reason="needs pip install -e '.[launchers]'")

SCHEMAS = {
    "joblib": joblib_plugin.JobLibLauncherConf,
    "submitit_local": submitit_plugin.LocalQueueConf,
    "submitit_slurm": submitit_plugin.SlurmQueueConf,
}


def test_the_three_launchers_are_shipped():
    assert LAUNCHERS == sorted(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_config_has_exactly_the_plugin_fields(name):
    ours = set(OmegaConf.load(CONF / "hydra" / "launcher" / f"{name}.yaml"))
    schema = {field.name for field in dataclasses.fields(SCHEMAS[name])}
    assert ours - schema == set(), f"{name}.yaml has fields the plugin rejects"
    assert schema - ours == set(), f"{name}.yaml lacks plugin fields"
    assert OmegaConf.load(CONF / "hydra" / "launcher" / f"{name}.yaml")._target_ == SCHEMAS[name]._target_


def _launcher(primary: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=primary, overrides=overrides, return_hydra_config=True)
    # Hydra sets these at run time; give them values so the launcher's interpolations resolve.
    cfg.hydra.sweep.dir = "/tmp/sweep"
    cfg.hydra.job.name = primary
    return cfg, cfg.hydra.launcher


@pytest.mark.parametrize("primary", PRIMARY)
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_our_file_wins_over_the_plugin_default_for_every_entry_point(primary, name):
    cfg, launcher = _launcher(primary, [f"hydra/launcher={name}"])
    assert cfg.hydra.runtime.choices["hydra/launcher"] == name
    resolved = OmegaConf.to_container(launcher, resolve=True)
    assert resolved["submitit_folder" if "submitit" in name else "n_jobs"] == (
        "/tmp/sweep/.submitit/%j" if "submitit" in name else 2  # our value; the plugin's default n_jobs is -1
    )


def test_slurm_tasks_follow_the_trainer_world_size():
    _, launcher = _launcher("train", ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4", "+trainer.num_nodes=2"])
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    slurm = instantiate(launcher)
    assert type(slurm).__name__ == "SlurmLauncher" and slurm.params["tasks_per_node"] == 4


@pytest.mark.parametrize("primary", PRIMARY)
def test_slurm_asks_for_one_task_per_trainer_device(primary):
    cfg, launcher = _launcher(primary, ["hydra/launcher=submitit_slurm"])
    devices = cfg.trainer.devices if "trainer" in cfg else 1  # label/probe runs without a trainer run one process
    assert launcher.tasks_per_node == devices and launcher.nodes == 1


APP = """
import os
import hydra

@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    with open(os.path.join(cfg.out, f"job{cfg.x}.txt"), "w") as handle:
        handle.write(str(os.getpid()))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("name", ["joblib", "submitit_local"])
def test_a_sweep_runs_every_job_in_its_own_process(name, tmp_path):
    """A two-job multirun through our launcher config (found via the search path, ahead of the plugin's own)."""
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app.yaml").write_text(
        f"defaults:\n  - _self_\n  - override hydra/launcher: {name}\n"
        f"hydra:\n  searchpath: [file://{CONF}]\n  sweep: {{dir: {tmp_path / 'sweep'}}}\nx: 0\nout: {tmp_path}\n"
    )
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    sweep = subprocess.Popen([sys.executable, str(tmp_path / "app.py"), "-m", "x=1,2"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, stderr[-2000:]
    job_pids = {int((tmp_path / f"job{x}.txt").read_text()) for x in (1, 2)}
    # The basic launcher would run both jobs inside the sweep process itself.
    assert sweep.pid not in job_pids
    if name == "submitit_local":
        assert list((tmp_path / "sweep" / ".submitit").iterdir()), "submitit wrote no job folders"
