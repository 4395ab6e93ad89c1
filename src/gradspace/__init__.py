"""gradspace: feature labeling by token-space gradient descent, FTGD and linguistic task spaces."""

__version__ = "0.1.0"
