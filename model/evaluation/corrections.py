"""What an expert must change to turn a pre-annotation into the truth (the simulated expert).

Each box added, deleted, moved (the nearest predicted box overlaps the true one at IoU < 0.5) or
relabelled counts as one correction; a box both moved and relabelled is one correction (one drag,
one click on the same region). Zero corrections means the pre-annotation is accepted unchanged.
The expert corrects the cheapest way: which shown box stands for which lesion is the pairing with
the least cost (``count``'s ``weigh``: the expert-seconds in ``model.evaluation.effort``; by
default the fewest corrections, then the fewest moves),
so where two shown boxes fit one lesion the rightly named one is kept and the other deleted. Among
equally cheap pairings, the closer boxes pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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


EXACT_LIMIT = 20_000  # bound on the pairings to search; beyond, greedy by IoU (images with many lesions)


def fewest(edits: Corrections) -> tuple[int, int, int]:
    """``count``'s default cost: the fewest corrections, then the fewest moves (the dearest edit),
    then the fewest moved boxes relabelled as well."""
    return edits.total, edits.moved, edits.moved_relabelled


def _edits(truth: list[Box], predicted: list[Box], ious: list[list[float]],
           choice: Sequence[int | None]) -> Corrections:
    """What pairing truth i with predicted box ``choice[i]`` (None: drawn anew) costs in edits."""
    pairs = [(i, j) for i, j in enumerate(choice) if j is not None]
    kept = [(i, j) for i, j in pairs if ious[i][j] >= MATCH_IOU]
    moved = [(i, j) for i, j in pairs if ious[i][j] < MATCH_IOU]
    return Corrections(added=len(truth) - len(pairs), deleted=len(predicted) - len(pairs), moved=len(moved),
                       relabelled=sum(truth[i].category != predicted[j].category for i, j in kept),
                       moved_relabelled=sum(truth[i].category != predicted[j].category for i, j in moved))


def _choices(overlapping: list[list[int]], used: frozenset = frozenset()) -> Iterator[tuple[int | None, ...]]:
    """Every one-to-one pairing: each truth with one of its overlapping boxes not yet taken, or none."""
    if not overlapping:
        yield ()
        return
    for j in [None, *(j for j in overlapping[0] if j not in used)]:
        for rest in _choices(overlapping[1:], used if j is None else used | {j}):
            yield (j, *rest)


def _greedy(ious: list[list[float]]) -> tuple[int | None, ...]:
    """Pairs by IoU, best first: those that fit (IoU >= 0.5), then any overlap."""
    choice: list[int | None] = [None] * len(ious)
    used: set[int] = set()
    for fits in (True, False):
        candidates = sorted(((iou, i, j) for i, row in enumerate(ious) for j, iou in enumerate(row)
                             if (iou >= MATCH_IOU) == fits and iou > 0), reverse=True)
        for _, i, j in candidates:
            if choice[i] is None and j not in used:
                choice[i] = j
                used.add(j)
    return tuple(choice)


def count(truth: Sequence[Box], predicted: Sequence[Box],
          weigh: Callable[[Corrections], Any] = fewest) -> Corrections:
    """The corrections that turn ``predicted`` into ``truth`` the cheapest way by ``weigh``."""
    truth, predicted = list(truth), list(predicted)
    ious = [[t.iou(p) for p in predicted] for t in truth]
    near = [i for i, row in enumerate(ious) if any(iou > 0 for iou in row)]  # the others are drawn anew
    overlapping = [[j for j, iou in enumerate(ious[i]) if iou > 0] for i in near]
    if math.prod(len(o) + 1 for o in overlapping) > EXACT_LIMIT:
        return _edits(truth, predicted, ious, _greedy(ious))

    def spread(chosen: tuple[int | None, ...]) -> tuple[int | None, ...]:
        choice: list[int | None] = [None] * len(truth)
        for i, j in zip(near, chosen):
            choice[i] = j
        return tuple(choice)

    def cost(choice: tuple[int | None, ...]) -> tuple:
        closeness = sum(ious[i][j] for i, j in enumerate(choice) if j is not None)
        return weigh(_edits(truth, predicted, ious, choice)), -closeness

    return _edits(truth, predicted, ious, min((spread(c) for c in _choices(overlapping)), key=cost))
