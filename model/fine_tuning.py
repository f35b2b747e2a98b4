"""How a trained model directory (a starter model, a project's served version) is fine-tuned on
new annotations: one schedule for the backend's training jobs and ``birads simulate``'s rounds
(docs/results.md item 37). No detectron2 here: the backend's settings read it.

In augmented epochs (``TrainSettings.augment_factor`` draws per image), so a job grows with a
project's data: 0.75 is the 60 iterations of 2 images that every simulated loop in
docs/results.md ran on 16 images. The learning rate is the gentlest that item 37 compared: with it
the starter forgets least of where lesions are (not of its categories: every rate lost those). A
first training from scratch or from a checkpoint keeps ``TrainSettings``' full schedule.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.config import TrainSettings

EPOCHS = 0.75
BASE_LR = 0.001  # round 0 on BrEaST: part2 lesion AP50 0.457 (0.005: 0.366; 0.02: 0.186)


def schedule(settings: TrainSettings, weights: str, epochs: float = EPOCHS,
             base_lr: float = BASE_LR) -> TrainSettings:
    """``settings`` fine-tuning the model directory ``weights`` (a fixed ``max_iter`` still wins)."""
    return replace(settings, weights=weights, epochs=epochs, base_lr=base_lr)
