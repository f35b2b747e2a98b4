"""How a trained model directory (a starter model, a project's served version) is fine-tuned on
new annotations: one schedule for the backend's training jobs and ``birads simulate``'s rounds
(docs/results.md items 37-38). No detectron2 here: the backend's settings read it.

In augmented epochs (``TrainSettings.augment_factor`` draws per image), so a job grows with a
project's data: 0.75 is the 60 iterations of 2 images that every simulated loop in
docs/results.md ran on 16 images. The learning rate is the gentlest that item 37 compared: with it
the starter forgets least of where lesions are (not of its categories: every rate lost those). A
first training from scratch or from a checkpoint keeps ``TrainSettings``' full schedule.

Replay: a project's first annotations are a small sample, and a fine-tune on them alone learns
their category mix as the model's prior (item 37: six BI-RADS 5 among 16 images, then most
lesions called 5). Beside them a fine-tune can replay images the starter was trained on,
``ratio`` per project image, so that the batch's mix is not all the model sees.

What a fine-tune holds as its parent had it (docs/results.md item 53): every fine-tune of item 52
lost 6-15 points of BI-RADS accuracy on BrEaST part2 to the first images' category mix, and each
one's box classifier, retrained on a few dozen crops, put its top box on a lesion less often than
the parent's. ``freeze`` names parts of the detector a fine-tune leaves as loaded (``FREEZABLE``);
with fewer than ``classifier_min_lesions`` lesions among the project's own images (replayed ones not
counted) the new version carries its parent's box classifier as it is.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from model import taxonomy
from model.modeldir import BOX_HEAD, CLASS_SCORES, is_model_dir, read_info

if TYPE_CHECKING:
    from model.config import TrainSettings
    from model.records import ImageRecord

EPOCHS = 0.75
BASE_LR = 0.001  # round 0 on BrEaST: part2 lesion AP50 0.457 (0.005: 0.366; 0.02: 0.186)
REPLAY_RATIO = 3.0  # replayed images per project image where REPLAY_DATA is given (item 38: 3 passed, 1 not)
REPLAY_SPLIT = "replay"  # the split replayed records carry, to tell them from a project's
# The parts a fine-tune can hold, as detectron2 parameter-name prefixes. The category head turns each
# proposal's pooled features into its class scores: the box head's layers and the class-score rows
# (the box deltas, the RPN and the trunk still learn where lesions are).
FREEZABLE = {"category-head": (f"{BOX_HEAD}.", f"{CLASS_SCORES}.")}
FREEZE: tuple[str, ...] = ()  # item 53 measured ("category-head",): its rule missed by one round
CLASSIFIER_MIN_LESIONS = 0    # item 53 measured 10**6 (never retrained on BrEaST's 67 part1 images)


def frozen_prefixes(parts: Sequence[str]) -> tuple[str, ...]:
    """The parameter-name prefixes of the named ``parts`` (``FREEZABLE``)."""
    unknown = sorted(set(parts) - set(FREEZABLE))
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: the parts a fine-tune can hold are {sorted(FREEZABLE)}")
    return tuple(prefix for part in parts for prefix in FREEZABLE[part])


def schedule(settings: TrainSettings, weights: str, epochs: float = EPOCHS, base_lr: float = BASE_LR,
             freeze: Sequence[str] = FREEZE, classifier_min_lesions: int = CLASSIFIER_MIN_LESIONS) -> TrainSettings:
    """``settings`` fine-tuning the model directory ``weights`` (a fixed ``max_iter`` still wins),
    holding the parts named in ``freeze`` and, below ``classifier_min_lesions`` of the project's
    own lesions, the parent's box classifier. Its training boxes rotate and pool as the parent's did."""
    return replace(settings, weights=weights, epochs=epochs, base_lr=base_lr, frozen=frozen_prefixes(freeze),
                   classifier_min_lesions=classifier_min_lesions,
                   box_rotation=parent_setting(weights, "box_rotation", settings.box_rotation, "corners"),
                   roi_align_fp32=parent_setting(weights, "roi_align_fp32", settings.roi_align_fp32, False))


def parent_setting(weights: str, name: str, otherwise: object, before: object) -> object:
    """The model directory ``weights``' training setting ``name`` (its model.json; ``before`` for
    a model trained before the setting existed), so that a fine-tune learns as its parent did:
    how it rotated its training boxes (docs/results.md item 56), how it pooled them (item 68);
    ``otherwise`` where ``weights`` is no model."""
    if not is_model_dir(weights):
        return otherwise
    return read_info(weights).settings.get(name, before)


def own_lesions(records: Sequence[ImageRecord]) -> int:
    """The lesion boxes among a run's project images (replayed ones left out)."""
    return sum(len(r.boxes) for r in records if r.split != REPLAY_SPLIT)


def replayed(pool: Sequence[ImageRecord], project: Sequence[ImageRecord], ratio: float = REPLAY_RATIO,
             seed: int = 0, labels: Sequence[str] | None = None) -> list[ImageRecord]:
    """``ratio`` images of ``pool`` per ``project`` image, to train on beside them.

    Always the same seeded order of the pool, so a later job replays the earlier one's images
    and more; in that order every prefix holds the pool's categories in its shares (to within
    one image each), so a small job replays the starter's mix, not a draw's (item 38's random
    16 held 3 BI-RADS 5 where the pool's share gives 1.5). Only images whose every box ``labels``
    can name (the project's label set; by default the one its boxes need,
    ``taxonomy.label_set_for``): a project that labels 4A/4B/4C cannot learn from a plain 4, so
    it replays no BI-RADS 4 image."""
    if ratio < 0:
        raise ValueError(f"replay ratio {ratio} must be >= 0")
    if labels is None:
        labels = taxonomy.label_set_for(b.category for r in project for b in r.boxes)
    fitting = _in_shares([r for r in pool if all(taxonomy.names(b.category, labels) for b in r.boxes)], seed)
    return [replace(r, image_id=f"{REPLAY_SPLIT}-{r.image_id}", split=REPLAY_SPLIT,
                    boxes=[replace(b, category=taxonomy.roll_up(b.category, labels)) for b in r.boxes],
                    birads=taxonomy.roll_up(r.birads, labels) if r.birads and taxonomy.names(r.birads, labels)
                    else r.birads)
            for r in fitting[:round(ratio * len(project))]]


def _in_shares(records: list[ImageRecord], seed: int) -> list[ImageRecord]:
    """``records`` shuffled within each image category, then interleaved so that each prefix
    takes next from the category furthest below its share of the whole."""
    rng = random.Random(seed)
    groups: dict[str, list[ImageRecord]] = {}
    for r in records:
        groups.setdefault(_category(r), []).append(r)
    keys = sorted(groups)  # a tie goes to the first category in sorted order, run after run
    for key in keys:
        rng.shuffle(groups[key])
    taken = dict.fromkeys(keys, 0)
    order = []
    for n in range(1, len(records) + 1):
        key = max(keys, key=lambda k: len(groups[k]) * n / len(records) - taken[k])
        order.append(groups[key][taken[key]])
        taken[key] += 1
    return order


def _category(record: ImageRecord) -> str:
    """The image's category: the experts' for the image, else its first box's; "" where neither."""
    return record.birads or next((b.category for b in record.boxes), "")
