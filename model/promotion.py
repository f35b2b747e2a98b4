"""Which annotated images a training round holds out, and whether its new version may be served.

One home for the rule the backend's training jobs apply and ``birads simulate`` models: a stable
share of the annotated images never trains, and a new version that loses more than a tolerance of
one held-out metric against the served version is kept but not served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from model.records import ImageRecord

HOLDOUT_FRACTION = 0.2      # share of annotated images kept out of training, to compare versions on
PROMOTE_METRIC = "ap50_lesion"
PROMOTE_METRICS = ("ap50_lesion", "ap50", "category_accuracy", "acceptance_rate")  # higher is better
PROMOTE_TOLERANCE = 0.02    # how much of PROMOTE_METRIC a new version may lose and still be served
HOLDOUT_METRICS = ("n_images", "ap", "ap50", "ap50_lesion", "acceptance_rate", "category_accuracy",
                   "confusion_matrix", "display")


def held_out(key: object, fraction: float) -> bool:
    """Stable split: an image (a task id, an image id) stays on its side across retrainings."""
    digest = hashlib.sha1(str(key).encode()).digest()
    return digest[0] / 256 < fraction


def split_holdout(records: Sequence[ImageRecord], fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(trained on, held out) by each record's patient where it has one (a patient's other images
    on the trained side would flatter the held-out check), else its image id (a Label Studio task);
    the held-out ones marked split "holdout"; all of them trained on where what would train holds
    no box (too few to hold any out)."""
    trained_on, held = [], []
    for r in records:
        (held if held_out(r.patient or r.image_id, fraction) else trained_on).append(r)
    if not any(r.boxes for r in trained_on):
        return list(records), []
    return trained_on, [replace(r, split="holdout") for r in held]


def holdout_metrics(model_dir: str | Path, holdout: Sequence[ImageRecord], score_threshold: float,
                    display: str = "threshold", shown_categories: Collection[str] | None = None,
                    **predictor_options: object) -> dict:
    """A model's metrics on held-out images, predicted and shown as it will be served (``display``:
    what the annotator sees, which the acceptance rate and category accuracy read;
    ``shown_categories``: the categories the project's labels can name, None: all; a box of another
    (a plain-4 starter's "4" where the config has only 4A/4B/4C) is never shown, so it scores
    nothing; ``predictor_options``: ``model.predict.Predictor``'s, e.g. device, box voting, readings)."""
    from model.evaluation.evaluate import LOW_SCORE, evaluate
    from model.predict import Predictor

    predictor = Predictor(model_dir, score_threshold=LOW_SCORE, **predictor_options)
    evaluation = evaluate(list(holdout), predictor([r.path for r in holdout]), predictor.classes, score_threshold,
                          display=display, shown_categories=shown_categories)
    return {k: evaluation.metrics.get(k) for k in HOLDOUT_METRICS}


FALLBACK_METRIC = "acceptance_rate"  # defined on any held-out image, a normal scan's too


def refusal(new: dict, served: dict | None, metric: str = PROMOTE_METRIC,
            tolerance: float = PROMOTE_TOLERANCE, always: bool = False) -> str | None:
    """Why a new version must not replace the served one (None: it may). Both measured on the same
    held-out images; with nothing to compare (no holdout, nothing served) it may. Where ``metric``
    is undefined there (box AP on held-out tasks without a lesion), the acceptance rate decides: a
    version that draws boxes on every normal scan is no better for having no AP to lose."""
    if always or not served:
        return None
    why = ""
    if metric != FALLBACK_METRIC and new.get(metric) == served.get(metric) == -1:  # neither has a box to score
        why = f" ({metric} is undefined on them: no held-out box it scores)"
        metric = FALLBACK_METRIC
    if not (isinstance(new.get(metric), int | float) and isinstance(served.get(metric), int | float)):
        return None
    if new[metric] < served[metric] - tolerance:
        return (f"{metric} {new[metric]:.3f} on {new.get('n_images')} held-out tasks is below the served version's "
                f"{served[metric]:.3f} by more than the tolerance {tolerance:g}{why}")
    return None
