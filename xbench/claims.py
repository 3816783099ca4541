"""A paper's checkable claims, as data a method declares (``Method.claims``).

A claim says: on a dataset, the value of ``metric`` on the ``subject`` rows (a method, with some
parameters, scored with some explainer) stands in ``relation`` to ``threshold``, either on its own
or as a difference to the ``reference`` rows (another method or explainer of the same dataset and
seeds). ``also`` lists claims that must hold together with it (EGT: a speedup *at* no more than half
a point of accuracy loss). The engine copies each method's claims into its records (under
``config.claims``), so verdicts are computed from records alone (:mod:`xbench.report.claims`).

Values and thresholds are in the metric's raw units (accuracy 0.9, not 90 %).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from xbench.params import OmitDefaults

Relation = Literal[">", ">=", "<", "<="]


class Rows(BaseModel):
    """The leaderboard rows a claim is about: one method (its registry name), optionally narrowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: str = Field(description="method registry name (config.method.name)")
    params: dict[str, Any] = Field(default_factory=dict, description="method params the row must have")
    explainer: str | None = Field(None, description="explainer row label for explanation metrics")
    exit: int | None = Field(None, description="the value of this exit (None: the final output)")

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items())
        name = f"{self.method} ({shown})" if shown else self.method
        return f"{name} ({self.explainer})" if self.explainer else name


class Claim(OmitDefaults):
    """One checkable statement of a paper (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    omit_at_default: ClassVar[frozenset[str]] = frozenset({"optional"})  # records from before it stay the same
    id: str = Field(description="short unique name, e.g. egt.speedup")
    statement: str = Field(description="what the paper says, in a few words")
    paper: str = Field(description="the paper's figure, e.g. '1.97x' or '94.41 vs 93.66 (CIFAR-10)'")
    metric: str = Field(description="the metric's name as records carry it")
    subject: Rows
    reference: Rows | None = Field(None, description="None: compare the subject's value with threshold")
    reference_metric: str | None = Field(None, description="the reference rows' metric, if not ``metric``")
    relation: Relation
    threshold: float = 0.0
    also: list[Claim] = Field(default_factory=list, description="claims that must hold as well")
    optional: bool = Field(
        False,
        description="left out of a run's verdicts when the run has no reference rows (a comparison with an "
        "explainer the suite may not score, e.g. TAME against Score-CAM); otherwise such a claim is 'inconclusive'",
    )

    def describe(self) -> str:
        """``metric(subject) − metric(reference) > 0``, or ``metric(subject) ≥ 1.97``."""
        lhs = f"{self.metric}[{self.subject.describe()}]"
        if self.reference is not None:
            lhs += f" − {self.reference_metric or self.metric}[{self.reference.describe()}]"
        return f"{lhs} {self.relation} {self.threshold:g}"
