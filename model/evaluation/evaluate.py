"""Evaluate a model directory on records: every figure of the paper, plus box AP and acceptance.

Image-level decisions ("decision"): "shown" takes the boxes the predictor would show (score >=
``score_threshold``) and the image's category is its most suspicious box, BI-RADS 1 when there is
none (``model.taxonomy.image_category``): what the annotator sees. "top" takes the category of the
most confident box at any score down to ``LOW_SCORE``: the paper's per-lesion classification, for
data where every image holds a lesion. Box AP uses all detections down to a low score.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from model import subcategory, taxonomy
from model.evaluation import effort, metrics
from model.malignancy_reading import category_mass
from model.records import MATCH_IOU, Box, Detection, ImageRecord

LOW_SCORE = 0.05  # detections kept for AP and for ranking (AUC)
DECISIONS = ("shown", "top")
# What the annotator is shown: boxes scored >= the threshold; or also the most confident box
# whatever its score (most images hold one lesion); or only the most confident box.
DISPLAYS = ("threshold", "top1", "top1-only")


@dataclass
class Evaluation:
    metrics: dict
    labels: list[str]                 # confusion-matrix axes (the model's label set)
    records: list[ImageRecord]
    detections: list[Detection]


def _shown(detection: Detection, threshold: float) -> list[Box]:
    return [b for b in detection.boxes if (b.score or 0.0) >= threshold]


def shown_text(display: str, threshold: float) -> str:
    """What an annotator sees under ``display``, in words for reports: top1-only shows the most
    confident box whatever its score."""
    if display == "top1-only":
        return "the most confident box shown, whatever its score: display top1-only"
    return f"boxes shown at score >= {threshold:g}, display {display}"


def displayed(detection: Detection, threshold: float, display: str = "threshold",
              named: Collection[str] | None = None) -> list[Box]:
    """The boxes an annotator sees under ``display`` (see DISPLAYS); ``named``: the categories the
    project's labels name (None: all), the others' boxes dropped after the choice, as the backend
    drops them (a top box no label names leaves top1-only showing nothing)."""
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {DISPLAYS}, not {display!r}")
    shown = _shown(detection, threshold)
    top = detection.top()
    if display == "threshold" or top is None or (top.score or 0.0) < LOW_SCORE:
        chosen = [] if display == "top1-only" else shown
    elif display == "top1-only":
        chosen = [top]
    else:
        chosen = shown if top in shown else [top, *shown]
    return chosen if named is None else [b for b in chosen if b.category in named]


def only_named(detection: Detection, named: Collection[str] | None) -> Detection:
    """``detection`` without the boxes (and their per-box values) of categories not ``named``
    (None: all named): what can rank among the boxes ever drawn."""
    if named is None:
        return detection
    kept = [i for i, b in enumerate(detection.boxes) if b.category in named]

    def pick(values: tuple) -> tuple:
        return tuple(values[i] for i in kept) if values else values

    return replace(detection, boxes=pick(detection.boxes), class_scores=pick(detection.class_scores),
                   malignancy=pick(detection.malignancy), ranks=pick(detection.ranks))


def _efforts(expert_boxes, detections, threshold: float, costs: effort.ActionCosts,
             named: Collection[str] | None = None) -> dict:
    """Expert-seconds under each display policy, and the cheapest one."""
    per_display = {d: effort.summary(expert_boxes, [displayed(x, threshold, d, named) for x in detections], costs)
                   for d in DISPLAYS}
    best = min(DISPLAYS, key=lambda d: per_display[d]["seconds_per_image"])
    return {"costs": costs.to_dict(), "displays": per_display, "best_display": best}


def image_decision(detection: Detection, threshold: float, decision: str = "shown",
                   display: str = "threshold", named: Collection[str] | None = None) -> str:
    """The image's category under ``decision`` (see the module docstring); "shown" reads the boxes
    the annotator sees under ``display`` (of ``named`` categories)."""
    if decision == "shown":
        return taxonomy.image_category(b.category for b in displayed(detection, threshold, display, named))
    if decision == "top":
        top = detection.top()
        return top.category if top is not None and (top.score or 0.0) >= LOW_SCORE else taxonomy.NO_LESION
    raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")


def malignancy_score(detection: Detection, threshold: str = taxonomy.BIOPSY_THRESHOLD) -> float:
    """How strongly the model suggests biopsy. With a box classifier, the P(malignant) of the
    image's most confident box (the image's lesion, as the paper classifies it) as the predictor
    read it (``model.malignancy_reading``: the classifier's pathology head, trained on biopsy and
    follow-up outcomes, alone or averaged with the box's class-score mass at 4 or above). Without
    one, ``category_malignancy``."""
    top = detection.top()
    malignancy = detection.malignancy_of(top) if top is not None else None
    return category_malignancy(detection, threshold) if malignancy is None else malignancy


def category_malignancy(detection: Detection, threshold: str = taxonomy.BIOPSY_THRESHOLD) -> float:
    """The highest probability mass on categories at or above ``threshold`` over the image's boxes
    (0 with no box)."""
    return max((category_mass(detection, number, threshold) for number in range(len(detection.boxes))),
               default=0.0)


def _nameable(model_classes: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The scored ``classes`` a model of ``model_classes`` can name: a second model (no 4) scored
    on data with 4 names no 4, and its per-category AP is not averaged over a class it cannot output."""
    named = set()
    for category in model_classes:
        try:
            named.add(taxonomy.roll_up(category, classes))
        except taxonomy.UnknownCategory:
            pass
    return [c for c in classes if c in named]


def _common_classes(records: list[ImageRecord], classes: Sequence[str]) -> list[str]:
    """The model's classes, or the coarse ones where the two do not meet: data with plain 4 and a
    model with 4A/4B/4C, or data with 4 and a model without it."""
    categories = {b.category for r in records for b in r.boxes}
    model_splits_4 = any(c in taxonomy.SUBCATEGORIES_OF_4 for c in classes)
    if model_splits_4 and taxonomy.label_set_for(categories) == taxonomy.COARSE:
        return taxonomy.detector_classes(taxonomy.COARSE)
    try:
        for category in categories:
            taxonomy.roll_up(category, classes)
        return list(classes)
    except taxonomy.UnknownCategory:
        return taxonomy.detector_classes(taxonomy.COARSE)


def _ranked(detection: Detection) -> list[Box]:
    """The boxes AP ranks: those kept for evaluation, each scored by its rank."""
    return [replace(b, score=detection.rank_of(b)) for b in detection.boxes if (b.score or 0.0) >= LOW_SCORE]


def _with_category(box: Box, classes: Sequence[str]) -> Box:
    return Box(box.x0, box.y0, box.x1, box.y1, taxonomy.roll_up(box.category, classes), box.score)


def on_classes(records: Sequence[ImageRecord], detections: Sequence[Detection],
               classes: Sequence[str]) -> tuple[list[list[Box]], list[Detection]]:
    """The experts' boxes and the model's, every category rolled up to the ``classes`` they are
    scored on (4A -> 4 where the model or the data has no subcategories)."""
    expert_boxes = [[_with_category(b, classes) for b in r.boxes] for r in records]
    return expert_boxes, [replace(d, boxes=tuple(_with_category(b, classes) for b in d.boxes))
                          for d in detections]


def _rolled(category: str, classes: Sequence[str]) -> str:
    return taxonomy.roll_up(category, classes) if category != taxonomy.NO_LESION else category


def image_truth(record: ImageRecord, classes: Sequence[str]) -> str:
    """The experts' image-level category on ``classes``: their BI-RADS, else their boxes' worst."""
    return _rolled(record.birads or taxonomy.image_category(b.category for b in record.boxes), classes)


def _screening(records, predicted_categories, detections, threshold) -> dict:
    """Against pathology (biopsy or follow-up); None when the data has none. ``auc`` ranks by
    ``malignancy_score``; ``auc_categories`` by the detector's class scores alone (the
    highest P(BI-RADS >= threshold) over the image's boxes, not the top box's), for comparison."""
    rows = [(r, p, d) for r, p, d in zip(records, predicted_categories, detections) if r.pathology]
    if not rows:
        return {}
    truth = [r.pathology == "malignant" for r, _, _ in rows]
    model = metrics.binary_from_labels(truth, [taxonomy.is_malignant(p, threshold) for _, p, _ in rows])
    model["auc"] = metrics.auc(truth, [malignancy_score(d, threshold) for _, _, d in rows])
    model["auc_categories"] = metrics.auc(truth, [category_malignancy(d, threshold) for _, _, d in rows])
    experts = metrics.binary_from_labels(
        truth, [taxonomy.is_malignant(r.birads, threshold) for r, _, _ in rows])
    return {"screening": model, "screening_experts": experts}


def in_table_ii(record: ImageRecord) -> bool:
    """The paper's Table II images: the experts' BI-RADS 1, 2, 3 or 5 (BI-RADS 4 left out)."""
    return bool(record.birads) and int(taxonomy.rank(record.birads)) != 4


def table_ii_scores(records: Sequence[ImageRecord], detections: Sequence[Detection],
                    threshold: str = taxonomy.BIOPSY_THRESHOLD) -> list[tuple[int, bool, float]]:
    """(index, the experts said BI-RADS 5, ``category_malignancy``) of each Table II image: what the
    paper's Table II counts and the score its AUC and a fitted cut rank."""
    return [(i, r.birads == "5", category_malignancy(d, threshold))
            for i, (r, d) in enumerate(zip(records, detections)) if in_table_ii(r)]


def _screening_paper(records, predicted_categories, detections, threshold, cut) -> dict:
    """The paper's Table II: experts' BI-RADS 5 positive, 1-3 negative, BI-RADS 4 left out. ``auc``
    ranks the same images by ``category_malignancy`` (for a model without 4: its P(5)), to tell a
    ranking that no cut could fix from one whose cut, the most probable category, is misplaced;
    ``at_cut``: the same images called positive at ``category_malignancy`` >= the cut of ``cut``
    (a fitted cut of model.evaluation.screening_cut, with where it was fitted), when given."""
    rows = table_ii_scores(records, detections, threshold)
    truth, scores = [t for _, t, _ in rows], [s for _, _, s in rows]
    table = metrics.binary_from_labels(
        truth, [taxonomy.is_malignant(predicted_categories[i], threshold) for i, _, _ in rows])
    table["auc"] = metrics.auc(truth, scores)
    if cut is not None:
        table["at_cut"] = {**metrics.binary_from_labels(truth, [s >= cut["cut"] for s in scores]),
                           "cut": cut["cut"], "data": cut.get("data"), "splits": cut.get("splits")}
    return table


def _subcategories(records, predicted_categories) -> dict | None:
    """The paper's Table III on images the experts put in 4A/4B/4C (positive: 4B or above),
    against the experts' subcategory and, where known, against pathology."""
    rows = [(r, p) for r, p in zip(records, predicted_categories) if r.birads in taxonomy.SUBCATEGORIES_OF_4]
    if not rows or not any(p in taxonomy.SUBCATEGORIES_OF_4 for _, p in rows):
        return None
    labels = list(taxonomy.SUBCATEGORIES_OF_4)
    in_four = [(r.birads, p) for r, p in rows if p in labels]
    suspicious = taxonomy.rank("4B")
    proven = [(r, p) for r, p in rows if r.pathology]
    malignant = [r.pathology == "malignant" for r, _ in proven]
    return {
        "4A_vs_4B": metrics.binary_from_labels([taxonomy.rank(r.birads) >= suspicious for r, _ in rows],
                                               [taxonomy.rank(p) >= suspicious for _, p in rows]),
        "4A_vs_4B_pathology": metrics.binary_from_labels(malignant, [taxonomy.rank(p) >= suspicious
                                                                     for _, p in proven]),
        "experts_4A_vs_4B_pathology": metrics.binary_from_labels(
            malignant, [taxonomy.rank(r.birads) >= suspicious for r, _ in proven]),
        "labels": labels,
        "confusion_matrix": metrics.confusion_matrix([t for t, _ in in_four], [p for _, p in in_four], labels),
        "predicted_outside_4": len(rows) - len(in_four),
    }


def subcategories_paper(records, detections, cuts: tuple[float, float]) -> dict | None:
    """The paper's Table III: a second model (trained without BI-RADS 4) reads every lesion the
    experts put in 4A/4B/4C, whatever a first model calls it: its box that best overlaps the
    lesion (``model.subcategory``) and the cuts give 4A/4B/4C; positive: 4B or above. Lesions it
    has no box on are counted apart."""
    rows = [(box.category, subcategory.matched_likeness(box, detection), record.pathology)
            for record, detection in zip(records, detections)
            for box in record.boxes if box.category in taxonomy.SUBCATEGORIES_OF_4]
    if not rows:
        return None
    found = [(truth, subcategory.subcategory(likeness, cuts), pathology)
             for truth, likeness, pathology in rows if likeness is not None]
    suspicious = taxonomy.rank("4B")
    proven = [(named, pathology == "malignant") for _, named, pathology in found if pathology]
    labels = list(taxonomy.SUBCATEGORIES_OF_4)
    return {
        "lesions": len(rows), "not_found": len(rows) - len(found), "cuts": list(cuts),
        "4A_vs_4B": metrics.binary_from_labels([taxonomy.rank(t) >= suspicious for t, _, _ in found],
                                               [taxonomy.rank(n) >= suspicious for _, n, _ in found]),
        "4A_vs_4B_pathology": metrics.binary_from_labels([m for _, m in proven],
                                                         [taxonomy.rank(n) >= suspicious for n, _ in proven]),
        "labels": labels,
        "confusion_matrix": metrics.confusion_matrix([t for t, _, _ in found], [n for _, n, _ in found], labels),
    }


def _by_top_box_place(records, truth, predicted, detections, expert_boxes, threshold) -> dict:
    """Category accuracy and the AUC against pathology on the images (with an expert box) whose most
    confident box is on a lesion, and on the rest: how much of each miss is the place and how much
    the category or the malignancy."""
    ious = metrics.top_box_ious(expert_boxes, [d.top() for d in detections])
    places = [None if iou is None else iou >= MATCH_IOU for iou in ious]
    result = {}
    for name, wanted in (("on_lesion", True), ("off_lesion", False)):
        picked = [i for i, place in enumerate(places) if place is wanted]
        proven = [i for i in picked if records[i].pathology]
        result[name] = {
            "images": len(picked),
            "category_accuracy": sum(truth[i] == predicted[i] for i in picked) / len(picked) if picked else None,
            "auc": metrics.auc([records[i].pathology == "malignant" for i in proven],
                               [malignancy_score(detections[i], threshold) for i in proven])}
    return result


def evaluate(records: list[ImageRecord], detections: list[Detection], classes: Sequence[str],
             score_threshold: float = 0.5, biopsy_threshold: str = taxonomy.BIOPSY_THRESHOLD,
             decision: str = "shown", costs: effort.ActionCosts | None = None,
             screening_cut: dict | None = None, display: str = "threshold",
             subcategory_cuts: tuple[float, float] | None = None,
             shown_categories: Collection[str] | None = None) -> Evaluation:
    """All metrics for ``detections`` (one per record, from a model with ``classes``);
    ``screening_cut``: Table II also at that fitted cut (model.evaluation.screening_cut);
    ``subcategory_cuts``: a second model's 4A/4B/4C cuts, for Table III the paper's way;
    ``display``: what the annotator is shown (DISPLAYS), which the acceptance rate and the
    "shown" decision read (the effort is reported under every display); ``shown_categories``: the
    categories a project's labels name (None: all): other boxes are never drawn, so they are
    neither shown nor ranked for AP (a training job's promotion gate)."""
    model_classes = list(classes)
    paper_table_iii = (subcategories_paper(records, detections, subcategory_cuts)
                       if subcategory_cuts and all(int(taxonomy.rank(c)) != 4 for c in model_classes) else None)
    classes = _common_classes(records, classes)
    named = _nameable(model_classes, classes)
    labels = [taxonomy.NO_LESION, *classes]
    expert_boxes, detections = on_classes(records, detections, classes)
    shown = [displayed(d, score_threshold, display, shown_categories) for d in detections]
    predicted = [image_decision(d, score_threshold, decision, display, shown_categories) for d in detections]
    drawable = [only_named(d, shown_categories) for d in detections]  # what AP ranks
    truth = [image_truth(r, classes) for r in records]
    matrix = metrics.confusion_matrix(truth, predicted, labels)
    result = {
        "n_images": len(records),
        "classes": list(classes),
        "model_classes": model_classes,
        "score_threshold": score_threshold,
        "decision": decision,
        "display": display,
        "biopsy_threshold": biopsy_threshold,
        "per_category": metrics.one_vs_rest(matrix, labels),
        "confusion_matrix": {"labels": labels, "matrix": matrix},
        "category_accuracy": sum(t == p for t, p in zip(truth, predicted)) / max(1, len(records)),
        "category_kappa": metrics.cohen_kappa(matrix),
        "screening_paper": _screening_paper(records, predicted, detections, biopsy_threshold,
                                            screening_cut),
        **_screening(records, predicted, detections, biopsy_threshold),
        **metrics.box_ap(expert_boxes, [_ranked(d) for d in drawable], classes, scored=named),
        "ap50_lesion": metrics.box_ap(
            [[Box(b.x0, b.y0, b.x1, b.y1, "lesion") for b in boxes] for boxes in expert_boxes],
            [[replace(b, category="lesion") for b in _ranked(d)] for d in drawable],
            ["lesion"])["ap50"],
        "top_box": metrics.top_box_localisation(expert_boxes, [d.top() for d in detections]),
        "by_top_box_place": _by_top_box_place(records, truth, predicted, detections, expert_boxes,
                                              biopsy_threshold),
        "acceptance_rate": sum(metrics.accepted(e, s) for e, s in zip(expert_boxes, shown))
        / max(1, len(records)),
        "effort": _efforts(expert_boxes, detections, score_threshold, costs or effort.ActionCosts(),
                           shown_categories),
    }
    subcategories = _subcategories(records, predicted)
    if subcategories:
        result["subcategories"] = subcategories
    if paper_table_iii:
        result["subcategories_paper"] = paper_table_iii
    return Evaluation(metrics=result, labels=labels, records=records, detections=detections)
