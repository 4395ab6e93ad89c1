"""Build a model's linguistic task space (transfer and gradient similarity) and compare it with the phenomena.

    python probe.py                                  # synth-1m at an early and a late checkpoint
    python probe.py model=pythia-410m revisions=[step1000,main] device=cuda
    python probe.py source.multirun_dir=logs/train/multiruns/<date>
"""

import hydra
from omegaconf import DictConfig

from gradspace.errors import exit_on_user_error
from gradspace.probing.run import run


@hydra.main(version_base="1.3", config_path="conf", config_name="probe")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
