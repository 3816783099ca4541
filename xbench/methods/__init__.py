"""Methods. Importing this package registers the built-in ones."""

from xbench.methods import baseline, coded_resnext, ecr, egt, lap, tame
from xbench.methods.base import Method, MethodContext
from xbench.models.output import Batch, ModelOutput

__all__ = ["Batch", "Method", "MethodContext", "ModelOutput", "baseline", "coded_resnext", "ecr", "egt", "lap", "tame"]
