"""lightpref: align language models with human preferences (DPO and its family) on PyTorch Lightning."""

from lightpref import moved
from lightpref.losses import LogProbs, LossOutput, PreferenceLoss, build

__version__ = "0.1.0"

__all__ = ["LogProbs", "LossOutput", "PreferenceLoss", "build"]

moved.install()
