"""Feature labeling by token-space gradient descent: `python label.py feature=synth_category feature.ids=[mammal,bird]`."""

import hydra
from omegaconf import DictConfig

from gradspace.errors import exit_on_user_error
from gradspace.labeling.run import run


@hydra.main(version_base="1.3", config_path="conf", config_name="label")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
