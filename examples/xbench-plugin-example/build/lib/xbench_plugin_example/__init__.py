"""An xbench method plugin: the baseline trained with label-smoothed cross-entropy."""

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from xbench.methods.base import Batch, ModelOutput
from xbench.methods.baseline import Baseline


class LabelSmoothingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")  # unknown keys in a suite are errors
    smoothing: float = Field(0.1, ge=0, lt=1)


class LabelSmoothing(Baseline):
    """Same model as the baseline; only the training objective changes."""

    paper = "Szegedy et al., Rethinking the Inception Architecture, CVPR 2016 (Sec. 7)"
    description = "baseline trained with label-smoothed cross-entropy"
    Params = LabelSmoothingParams

    def loss(self, output: ModelOutput, batch: Batch):
        return F.cross_entropy(output.logits, batch.y, label_smoothing=self.params.smoothing)
