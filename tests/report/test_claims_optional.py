"""Optional claims (a comparison with an explainer a suite may not score) appear only where the run has their
reference rows; a non-optional claim without reference rows stays 'inconclusive'. The claims TAME and LAP
declare against the explainer zoo are optional."""

from __future__ import annotations

from typing import Any

from tests.helpers import make_record
from xbench.claims import Claim, Rows
from xbench.registry import METHODS
from xbench.report.claims import verdicts
from xbench.report.records import Record

OPTIONAL = Claim(
    id="tame.ad.scorecam",
    statement="TAME below Score-CAM",
    paper="below",
    metric="average_drop",
    subject=Rows(method="tame", explainer="native"),
    reference=Rows(method="baseline", explainer="scorecam"),
    relation="<",
    optional=True,
)
REQUIRED = OPTIONAL.model_copy(update={"id": "tame.ad", "optional": False})


def rec(method: str, explainer: str, seed: int, value: float, claims: list[Claim]) -> Record:
    config: dict[str, Any] = {"method": {"name": method, "params": {}}, "claims": [c.model_dump() for c in claims]}
    return make_record(method, seed, "average_drop", value, explainer=explainer, config=config)


def test_optional_claim_is_left_out_without_its_reference_rows() -> None:
    records = [rec("tame", "native", s, v, [OPTIONAL, REQUIRED]) for s, v in enumerate([0.1, 0.2, 0.15])]
    found = {v.claim.id: v for v in verdicts(records)}
    assert "tame.ad.scorecam" not in found
    assert found["tame.ad"].reason == "no reference rows"


def test_optional_claim_is_decided_with_its_reference_rows() -> None:
    records = [rec("tame", "native", s, v, [OPTIONAL]) for s, v in enumerate([0.1, 0.2, 0.15])]
    records += [rec("baseline", "scorecam", s, v, []) for s, v in enumerate([0.5, 0.6, 0.55])]
    (verdict,) = verdicts(records)
    assert verdict.claim.id == "tame.ad.scorecam"
    assert verdict.mean is not None and abs(verdict.mean - (-0.4)) < 1e-12
    assert verdict.verdict == "supported"


def test_optional_is_left_out_of_dumps_at_its_default() -> None:
    assert "optional" not in REQUIRED.model_dump()
    assert OPTIONAL.model_dump()["optional"] is True


def test_tame_and_lap_compare_with_the_explainer_zoo() -> None:
    tame = {c.id: c for c in METHODS.get("tame").claims}
    for explainer in ("gradcam_pp", "scorecam", "ablationcam", "rise"):
        for short, metric in (("ad", "average_drop"), ("ic", "increase_in_confidence")):
            claim = tame[f"tame.{short}.{explainer}"]
            assert claim.optional and claim.metric == metric
            assert claim.reference == Rows(method="baseline", explainer=explainer)
    lap = {c.id: c for c in METHODS.get("lap").claims}
    for explainer in ("saliency", "integrated_gradients", "guided_backprop"):
        claim = lap[f"lap.faithfulness.{explainer}"]
        assert claim.optional and claim.reference == Rows(method="lap", explainer=explainer)
    # The original Grad-CAM claims stay non-optional: their verdicts were in every earlier run.
    assert not tame["tame.ad"].optional and not lap["lap.faithfulness"].optional
