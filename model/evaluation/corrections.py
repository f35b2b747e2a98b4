"""What an expert must change to turn a pre-annotation into the truth (the simulated expert).

Each box added, deleted, moved (the nearest predicted box overlaps the true one at IoU < 0.5) or
relabelled counts as one correction; a box both moved and relabelled is one correction (one drag,
one click on the same region). Zero corrections means the pre-annotation is accepted unchanged.
Where two shown boxes fit one lesion, the expert keeps the one with the right category (and
deletes the other) rather than relabel one: pairs with the right category come first, then by IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from model.records import MATCH_IOU, Box


@dataclass(frozen=True)
class Corrections:
    added: int = 0
    deleted: int = 0
    moved: int = 0
    relabelled: int = 0
    moved_relabelled: int = 0   # of ``moved``, those whose category was wrong too

    @property
    def total(self) -> int:
        return self.added + self.deleted + self.moved + self.relabelled


def _pairs(truth: list[Box], predicted: list[Box], accept) -> list[tuple[Box, Box]]:
    """Greedy one-to-one pairs among those ``accept`` allows: the right category first, then by
    IoU, best first."""
    candidates = sorted(((t.category == p.category, t.iou(p), i, j) for i, t in enumerate(truth)
                         for j, p in enumerate(predicted) if accept(t.iou(p))), reverse=True)
    used_t, used_p, pairs = set(), set(), []
    for *_, i, j in candidates:
        if i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
            pairs.append((truth[i], predicted[j]))
    return pairs


def count(truth: Sequence[Box], predicted: Sequence[Box]) -> Corrections:
    truth, predicted = list(truth), list(predicted)
    matched = _pairs(truth, predicted, lambda iou: iou >= MATCH_IOU)
    relabelled = sum(t.category != p.category for t, p in matched)
    rest_t = [t for t in truth if all(t is not m for m, _ in matched)]
    rest_p = [p for p in predicted if all(p is not m for _, m in matched)]
    moved = _pairs(rest_t, rest_p, lambda iou: iou > 0)
    return Corrections(added=len(rest_t) - len(moved), deleted=len(rest_p) - len(moved), moved=len(moved),
                       relabelled=relabelled, moved_relabelled=sum(t.category != p.category for t, p in moved))
