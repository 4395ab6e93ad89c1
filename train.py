"""Fine-tune a language model on one linguistic task by gradient differentials of minimal pairs (FTGD).

    python train.py task=sva model=pythia-410m
    python train.py -m task=sva,npi,anaphor model=synth-1m objective=bounded,diff,lm
"""

import hydra
from omegaconf import DictConfig

from gradspace.errors import exit_on_user_error
from gradspace.ftgd.report import print_summary
from gradspace.ftgd.run import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    print_summary(run(cfg), cfg.paths.output_dir)


if __name__ == "__main__":
    main()
