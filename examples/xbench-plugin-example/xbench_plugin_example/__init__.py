"""Two xbench method plugins: the baseline trained with label smoothing, and with mixup."""

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from xbench.methods.baseline import Baseline
from xbench.models.output import Batch, ModelOutput


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


class MixupParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.2, gt=0, description="the mixing weight is drawn from Beta(alpha, alpha)")


class Mixup(Baseline):
    """Same model as the baseline, trained on mixed pairs: the training step changes the inputs."""

    paper = "Zhang et al., mixup: Beyond Empirical Risk Minimization, ICLR 2018, arXiv 1710.09412"
    description = "baseline trained on convex combinations of image pairs and of their labels"
    Params = MixupParams

    def training_step(self, model, batch: Batch):
        # torch's global generator: seeded per cell and saved in epoch checkpoints by xbench.
        lam = float(torch.distributions.Beta(self.params.alpha, self.params.alpha).sample())
        pair = torch.randperm(len(batch.x), device=batch.x.device)
        logits = model(lam * batch.x + (1 - lam) * batch.x[pair]).logits
        return lam * F.cross_entropy(logits, batch.y) + (1 - lam) * F.cross_entropy(logits, batch.y[pair])
