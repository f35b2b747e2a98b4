"""Expert-seconds: what a pre-annotated image costs the expert, against drawing it by hand.

Corrections (``model.evaluation.corrections``) count actions; actions differ in cost. Figures:

- draw a box from nothing: 7.0 s with extreme clicking (Papadopoulos et al., "Extreme clicking
  for efficient object annotation", ICCV 2017); 35 s for a high-quality box drawn the traditional
  way (the ImageNet figure they cite). Default 7 s, the cheapest drawing: it makes pre-annotation
  look least useful, so a saving shown with it holds at 35 s too. Reports show both ends.
- verify a shown box: 1.6 s (Papadopoulos et al., "We don't need no bounding-boxes", CVPR 2016).
  Every shown box is looked at, including the ones then relabelled, adjusted or deleted.
- relabel, delete: 2.9 s each, from the keystroke-level model (Card, Moran & Newell 1980: mental
  preparation M = 1.35 s, point P = 1.1 s, click BB = 0.2 s, key K = 0.28 s). In Label Studio's
  image view a relabel is M + P + BB (select the region) + K (the label's hotkey); a delete is
  M + P + BB + K (Backspace).
- adjust a box (moved: overlaps the truth at IoU < 0.5): 6.2 s = M + two corner drags of
  P + B + P + B (2.4 s each). A box both moved and relabelled costs both.

The expert's reading of the image and BI-RADS judgement happen with or without the model, so
they are counted on neither side; choosing a label in the UI is inside the draw and relabel costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from model.evaluation import corrections
from model.records import Box

DRAW_ENDS = (7.0, 35.0)   # extreme clicking, traditional high-quality box
RATIO_AT_DRAW_ENDS = {d: f"ratio_draw_{d:g}s" for d in DRAW_ENDS}  # summary's keys for them
SUMMARY_KEYS = ("seconds_per_image", "by_hand_seconds_per_image", "ratio", *RATIO_AT_DRAW_ENDS.values())


@dataclass(frozen=True)
class ActionCosts:
    draw: float = 7.0
    verify: float = 1.6
    relabel: float = 2.9
    delete: float = 2.9
    adjust: float = 6.2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Effort:
    """Seconds for one or more images: with pre-annotation, and drawing every lesion by hand."""

    with_model: float
    by_hand: float

    @property
    def ratio(self) -> float | None:
        return self.with_model / self.by_hand if self.by_hand else None


ACTIONS = ("verify", "relabel", "delete", "adjust", "draw")


def _fixing_seconds(edits: corrections.Corrections, costs: ActionCosts) -> dict[str, float]:
    """What ``edits`` cost, per action (a box both moved and relabelled costs both)."""
    return {"relabel": (edits.relabelled + edits.moved_relabelled) * costs.relabel,
            "delete": edits.deleted * costs.delete, "adjust": edits.moved * costs.adjust,
            "draw": edits.added * costs.draw}


def edits(truth: Sequence[Box], shown: Sequence[Box], costs: ActionCosts) -> corrections.Corrections:
    """What the expert changes: the corrections that cost the fewest seconds at ``costs``."""
    return corrections.count(truth, shown, lambda e: sum(_fixing_seconds(e, costs).values()))


def _action_seconds(truth: Sequence[Box], shown: Sequence[Box], costs: ActionCosts) -> dict[str, float]:
    """One image's seconds with pre-annotation, per action: verify every shown box, then fix what is
    wrong the cheapest way at ``costs``."""
    return {"verify": len(shown) * costs.verify, **_fixing_seconds(edits(truth, shown, costs), costs)}


def by_hand_seconds(truth: Sequence[Box], costs: ActionCosts) -> float:
    """One image drawn by hand: every lesion drawn from nothing."""
    return len(truth) * costs.draw


def image_effort(truth: Sequence[Box], shown: Sequence[Box], costs: ActionCosts) -> Effort:
    """One image: verify every shown box, then fix what is wrong; by hand: draw every lesion."""
    return Effort(sum(_action_seconds(truth, shown, costs).values()), by_hand_seconds(truth, costs))


def seconds_by_action(truths: Sequence[Sequence[Box]], shown: Sequence[Sequence[Box]],
                      costs: ActionCosts) -> dict[str, float]:
    """Where the expert's seconds with pre-annotation go: each action's seconds per image."""
    per_image = [_action_seconds(t, s, costs) for t, s in zip(truths, shown)]
    return {action: sum(p[action] for p in per_image) / max(1, len(per_image)) for action in ACTIONS}


def total_effort(truths: Sequence[Sequence[Box]], shown: Sequence[Sequence[Box]],
                 costs: ActionCosts) -> Effort:
    efforts = [image_effort(t, s, costs) for t, s in zip(truths, shown)]
    return Effort(sum(e.with_model for e in efforts), sum(e.by_hand for e in efforts))


def summary(truths: Sequence[Sequence[Box]], shown: Sequence[Sequence[Box]],
            costs: ActionCosts) -> dict:
    """Per-image seconds and ratio at ``costs``, and the ratio at both ends of the draw cost."""
    n = max(1, len(truths))
    effort = total_effort(truths, shown, costs)
    ends = {key: (effort if d == costs.draw else total_effort(truths, shown, replace(costs, draw=d))).ratio
            for d, key in RATIO_AT_DRAW_ENDS.items()}  # the default draw cost is one of the ends
    return {"seconds_per_image": effort.with_model / n, "by_hand_seconds_per_image": effort.by_hand / n,
            "ratio": effort.ratio, **ends}
