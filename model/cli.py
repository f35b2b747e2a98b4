"""``birads``: import data, train, predict, evaluate. Thin: each command calls one module."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

from model import fine_tuning, malignancy_reading, promotion
from model.category_reading import READINGS, SERVED_READING
from model.io import DataError, StagedDirectory
from model.records import BOX_ROTATIONS, BOX_VOTING_IOU, DEVICE_CHOICES
from model.taxonomy import UnknownCategory

log = logging.getLogger("birads")


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="FORMAT:PATH",
                        help="busbra:DIR, breast:DIR, coco:FILE, labelstudio:FILE or records:FILE")
    parser.add_argument("--image-root", type=Path,
                        help="where Label Studio /data/local-files and /data/upload URLs point")
    parser.add_argument("--label", action="append", type=_label_name, default=[], metavar="NAME=CATEGORY",
                        help="read a coco or labelstudio file's label NAME as this BI-RADS category "
                             "(a label config's alias, e.g. b3=3); repeat for each")
    parser.add_argument("--splits", nargs="*", help="use only these splits (e.g. fold1 fold2)")
    parser.add_argument("--exclude-splits", nargs="*", help="leave these splits out")
    parser.add_argument("--coarse", action="store_true",
                        help="read BI-RADS 4A/4B/4C as plain 4 (a model of categories 2, 3, 4, 5)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _category(text: str) -> str:
    from model.taxonomy import normalize

    try:
        return normalize(text)
    except UnknownCategory as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _label_name(text: str) -> tuple[str, str]:
    name, sep, category = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=CATEGORY (e.g. b3=3)")
    return name, _category(category)


def _everything(args: argparse.Namespace):
    """All records of ``--data``, 4A/4B/4C read as 4 under ``--coarse``."""
    from model import datasets

    records = datasets.load(args.data, args.image_root, dict(args.label))
    _splits_found(records, args)
    return datasets.coarse(records) if args.coarse else records


def _splits_found(records, args: argparse.Namespace) -> None:
    """Every split the command names (to train on, leave out or hold out) must be in ``--data``."""
    from model.datasets import check_splits

    check_splits(records, args.data, [*(args.splits or ()), *(args.exclude_splits or ()),
                                      *(getattr(args, "holdout_splits", None) or ())])


def _records(args: argparse.Namespace):
    from model import datasets

    everything = _everything(args)
    if not everything:
        raise DataError(f"{args.data}: no images found (is its images folder, or its table, empty?)")
    records = datasets.select(everything, args.splits, args.exclude_splits)
    if not records:
        raise DataError(f"{args.data}: no images left after choosing splits")
    return records


def _training_and_holdout(args: argparse.Namespace):
    """The chosen splits less ``--holdout-splits`` (never scored on what it learnt), and those."""
    from model import datasets

    if not args.holdout_splits:
        return _records(args), None
    holdout = datasets.select(_everything(args), args.holdout_splits)
    if not holdout:
        raise DataError(f"{args.data}: no images in --holdout-splits {' '.join(args.holdout_splits)}")
    training = datasets.select(_records(args), exclude=args.holdout_splits)
    if not training:
        raise DataError(f"{args.data}: no training images left beside --holdout-splits")
    return training, holdout


def cmd_import(args: argparse.Namespace) -> None:
    from model.datasets.export import write_dataset

    facts = write_dataset(_records(args), args.out, args.as_predictions, args.document_root)
    print(json.dumps(facts, indent=1))


def _from_args(kind, args: argparse.Namespace, prefix: str = ""):
    """A settings dataclass from the options given (``--<prefix><field>``); defaults for the rest."""
    return kind(**{f.name: getattr(args, prefix + f.name) for f in fields(kind)
                   if getattr(args, prefix + f.name, None) is not None})


def _settings(args: argparse.Namespace):
    from model.config import TrainSettings

    return _from_args(TrainSettings, args)


PROBE_IMAGES = 64


def cmd_train(args: argparse.Namespace) -> None:
    from model.train import seconds_per_iteration, train

    if args.probe:  # the last line of output: seconds per iteration, for scripts
        print(seconds_per_iteration(_records(args)[:PROBE_IMAGES], _settings(args), steps=8))
        return
    out = train(_records(args), args.out, _settings(args), resume=args.resume)
    print(out)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from model.pretrain import PretrainSettings, pretrain, seconds_per_epoch

    if args.geometry:
        raise DataError("--geometry reaches only the classifier's heads, which pretraining throws away: "
                        "it is an option of `birads box-classifier`")
    if args.probe:  # the last line of output: seconds per epoch, for scripts
        print(seconds_per_epoch(_records(args), _from_args(PretrainSettings, args)))
        return
    training, holdout = _training_and_holdout(args)
    print(pretrain(training, args.out, _from_args(PretrainSettings, args), holdout))


def cmd_box_classifier(args: argparse.Namespace) -> None:
    from model.box_classifier import BoxClassifierSettings, train_box_classifier
    from model.modeldir import read_info

    training, holdout = _training_and_holdout(args)
    classes = read_info(args.model).classes
    print(train_box_classifier(training, args.model, classes, _from_args(BoxClassifierSettings, args), holdout))


def _crop_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--holdout-splits", nargs="*", help="score the crop classifier on these splits")
    for name, kind in (("crop_size", int), ("epochs", int), ("batch_size", int), ("max_lr", float),
                       ("background_per_lesion", float), ("label_smoothing", float), ("ordinal_loss", float),
                       ("outline_loss", float), ("seed", int)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 autocast (default on)")
    parser.add_argument("--keep-aspect", action=argparse.BooleanOptionalAction, default=None,
                        help="square crops about the box's longer side instead of each box stretched "
                             "to a square (default off)")
    parser.add_argument("--vertical-flip", action=argparse.BooleanOptionalAction, default=None,
                        help="flip crops upside down at random while training (default on)")
    parser.add_argument("--flip-at-test", action=argparse.BooleanOptionalAction, default=None,
                        help="read each crop and its mirror image, averaged (default off)")
    parser.add_argument("--geometry", action=argparse.BooleanOptionalAction, default=None,
                        help="the heads also read each box's shape, size and depth in the image, "
                             "which a stretched crop hides (box-classifier only; default on)")


def cmd_predict(args: argparse.Namespace) -> None:
    from model.predict import Predictor

    predictor = Predictor(args.model, device=args.device, bf16=args.bf16,
                          score_threshold=args.score_threshold, max_boxes=args.max_boxes,
                          box_classifier=args.box_classifier, box_voting_iou=args.box_voting,
                          category_voting_iou=args.category_voting, category_reading=args.category_reading,
                          malignancy_reading=args.malignancy_reading, proposals=args.proposals)
    predict = predictor
    if args.split_4_with:
        predict = predictor.with_subcategories(_all_scores_predictor(args.split_4_with, args))
    for path, detection in zip(args.images, predict(args.images, args.batch_size)):
        boxes = [{"xyxy": [round(v, 1) for v in (b.x0, b.y0, b.x1, b.y1)], "category": b.category,
                  "score": round(b.score, 4)} for b in detection.boxes]
        for box, malignancy in zip(boxes, detection.malignancy):  # with a box classifier
            box["malignancy"] = round(malignancy, 4)
        for box, rank in zip(boxes, detection.ranks):  # with a box classifier that re-ranks
            box["rank"] = round(rank, 4)
        print(json.dumps({"image": str(path), "width": detection.width, "height": detection.height,
                          "boxes": boxes}))


def _all_scores_predictor(model_dir: Path, args: argparse.Namespace):
    """A predictor that keeps every box down to evaluation's low score (for AP, ranking, splits)."""
    from model.evaluation.evaluate import LOW_SCORE
    from model.predict import Predictor

    return Predictor(model_dir, device=args.device, bf16=args.bf16, score_threshold=LOW_SCORE,
                     max_boxes=args.max_boxes, box_classifier=args.box_classifier,
                     box_voting_iou=args.box_voting, category_voting_iou=args.category_voting,
                     category_reading=args.category_reading, malignancy_reading=args.malignancy_reading,
                     proposals=args.proposals)


def _costs(args: argparse.Namespace):
    from model.evaluation.effort import ActionCosts

    return _from_args(ActionCosts, args, "cost_")


def _cost_options(parser: argparse.ArgumentParser) -> None:
    from model.evaluation.effort import ActionCosts

    for f in fields(ActionCosts):
        parser.add_argument(f"--cost-{f.name}", type=float, metavar="SECONDS",
                            help=f"expert-seconds to {f.name} a box (default {f.default}; "
                            "sources in model/evaluation/effort.py)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from model.evaluation.evaluate import evaluate
    from model.evaluation.report import write_report
    from model.evaluation.screening_cut import load_cut
    from model.subcategory import SPLIT_CLASSES, load_cuts

    StagedDirectory(args.out).check()  # before minutes of predictions, not after
    records = _records(args)
    predictor = _all_scores_predictor(args.model, args)
    predict, classes = predictor, predictor.classes
    if args.split_4_with:  # the paper's second model splits BI-RADS 4 into 4A/4B/4C
        predict = predictor.with_subcategories(_all_scores_predictor(args.split_4_with, args))
        classes = list(SPLIT_CLASSES)
    detections = predict([r.path for r in records], args.batch_size)
    evaluation = evaluate(records, detections, classes, args.score_threshold, args.biopsy_threshold,
                          args.image_decision, _costs(args), load_cut(args.model, args.biopsy_threshold),
                          subcategory_cuts=load_cuts(args.model))  # read where the model has no 4
    # how the kept detections were read, for what reads them again (scripts/top_box_reading.py)
    evaluation.metrics["readings"] = {"category": args.category_reading, "malignancy": args.malignancy_reading,
                                      "category_voting": args.category_voting,
                                      "proposals": predictor.cfg.MODEL.RPN.POST_NMS_TOPK_TEST}
    write_report(evaluation, args.out, str(args.model), args.data)
    m = evaluation.metrics
    print(json.dumps({k: m.get(k) for k in ("n_images", "ap", "ap50", "ap50_lesion",
                                             "acceptance_rate", "category_accuracy",
                                             "screening_paper", "screening", "effort")}, indent=1))
    print(f"report: {Path(args.out) / 'report.md'}")


def cmd_fit_cuts(args: argparse.Namespace) -> None:
    from model.evaluation import screening_cut
    from model.subcategory import fit_on_records, require_second_model, save_cuts

    records = _records(args)
    second = _all_scores_predictor(args.model, args)
    require_second_model(second.classes, str(args.model))
    detections = second([r.path for r in records], args.batch_size)
    source = {"data": args.data, "splits": args.splits}
    fitted = {**fit_on_records(records, detections), **source}
    print(json.dumps(fitted))
    print(f"cuts written to {save_cuts(args.model, fitted)}")
    table_ii = screening_cut.fit_on_records(records, detections)
    path = screening_cut.store_cut(args.model, table_ii and {**table_ii, **source})
    if table_ii is not None:
        print(json.dumps(table_ii))
        print(f"Table II cut written to {path}")


def cmd_simulate(args: argparse.Namespace) -> None:
    from model import datasets
    from model.simulation import SimulationSettings, simulate

    if args.resume:
        raise DataError("simulate always starts afresh: --resume continues a `birads train` run only")
    everything = _everything(args)
    pool = datasets.select(everything, args.splits, args.exclude_splits)
    holdout = datasets.select(everything, args.holdout_splits)
    pool = [r for r in pool if r not in holdout]
    settings = SimulationSettings(initial=args.initial, round_size=args.round_size, rounds=args.rounds,
                                  order=args.order, score_threshold=args.score_threshold, seed=args.sim_seed,
                                  display=args.display, box_voting_iou=args.box_voting, costs=_costs(args),
                                  train=_settings(args))
    if args.fine_tune_epochs is not None:
        settings.fine_tune_epochs = args.fine_tune_epochs
    if args.fine_tune_lr is not None:
        settings.fine_tune_lr = args.fine_tune_lr
    if args.fine_tune_freeze is not None:
        settings.fine_tune_freeze = tuple(args.fine_tune_freeze)
    if args.classifier_min_lesions is not None:
        settings.classifier_min_lesions = args.classifier_min_lesions
    # never the loop's own images: a replayed holdout image would be tested on what it learnt
    taken = {r.path for r in pool + holdout}
    replay = [r for r in _replay_pool(args) if r.path not in taken]
    if args.replay_data and not replay:
        raise DataError(f"--replay-data {args.replay_data}: every image is in the loop's pool or held out")
    if replay:
        settings.replay_source = f"{args.replay_data} ({len(replay)} images)"
    if args.replay_ratio is not None:
        settings.replay_ratio = args.replay_ratio
    settings.holdout_fraction, settings.promote_metric = args.holdout_fraction, args.promote_metric
    settings.promote_tolerance = args.promote_tolerance
    result = simulate(pool, holdout, args.out, settings, replay)
    print(json.dumps(result["rounds"], indent=1))


def _replay_pool(args: argparse.Namespace):
    """``--replay-data``'s records in ``--replay-splits`` (4A/4B/4C as 4 under ``--coarse``)."""
    from model import datasets

    if not args.replay_data:
        return []
    named = dict(args.label) if args.replay_data.partition(":")[0] in datasets.LABELLED_FILES else None
    records = datasets.load_splits(args.replay_data, args.replay_splits, args.image_root, named)
    return datasets.coarse(records) if args.coarse else records


def _inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="a trained model directory")
    parser.add_argument("--device", default="auto", help=DEVICE_CHOICES)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 + channels_last (default: on where the hardware has bf16)")
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--max-boxes", type=int, default=10)
    parser.add_argument("--batch-size", type=_positive, default=4)
    parser.add_argument("--box-classifier", action=argparse.BooleanOptionalAction, default=True,
                        help="re-name boxes with the model's box classifier where it has one (default on)")
    parser.add_argument("--category-reading", choices=list(READINGS), default=SERVED_READING,
                        help="each box's category from its class scores: their median in rank order or "
                             f"their argmax (model/category_reading.py; default {SERVED_READING})")
    parser.add_argument("--malignancy-reading", choices=list(malignancy_reading.READINGS),
                        default=malignancy_reading.SERVED_READING,
                        help="each box's P(malignant), where the box classifier gives one: its pathology head "
                             "alone, or its mean with the box's class-score mass at 4 or above (always 4) "
                             f"(model/malignancy_reading.py; default {malignancy_reading.SERVED_READING})")
    parser.add_argument("--proposals", type=_positive, metavar="N",
                        help="the RPN proposals the box head reads per image (and box voting's voters): fewer, "
                             "faster (docs/results.md item 76; default: 75 where a CPU predicts in float32, item 82, "
                             "else the model's config's)")
    parser.add_argument("--category-voting", type=float, metavar="IOU",
                        help="give each box the mean class scores of the proposals overlapping it at this IoU, "
                             "weighted by their P(lesion) (model/box_voting.py; default off: its own)")
    _box_voting_options(parser)


def _box_voting_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--box-voting", type=float, metavar="IOU", default=BOX_VOTING_IOU,
                        help="move each box to the mean of the proposals overlapping it at this IoU, weighted "
                             f"by their P(lesion) (model/box_voting.py; default {BOX_VOTING_IOU})")
    parser.add_argument("--no-box-voting", dest="box_voting", action="store_const", const=None,
                        help="leave each box where the detector put it")


def _train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", help="none (from scratch), a checkpoint, a URL, "
                        "zoo:<config> or a model directory to fine-tune")
    parser.add_argument("--base-config", help="detectron2 model-zoo config (default R101-FPN)")
    for name, kind in (("image_size", int), ("max_size", int), ("epochs", float), ("max_iter", int),
                       ("batch_size", int), ("base_lr", float), ("augment_factor", int),
                       ("rotation_degrees", float), ("roi_per_image", int), ("repeat_threshold", float),
                       ("seed", int), ("checkpoint_period", int), ("num_workers", int)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind)
    parser.add_argument("--class-balanced", action="store_true", default=None)
    parser.add_argument("--box-rotation", choices=BOX_ROTATIONS,
                        help="how a training rotation turns a box: the box around its rotated corners "
                             "(detectron2's, the default) or around the rotated ellipse inscribed in it "
                             "(docs/results.md item 56)")
    parser.add_argument("--roi-align-fp32", action="store_true", default=None,
                        help="under bf16, pool each box's features in float32 at its exact corners "
                             "(docs/results.md item 68; recorded in the model, which predicts so too)")
    parser.add_argument("--bf16", action="store_true", default=None,
                        help="train under bfloat16 autocast + channels_last")
    parser.add_argument("--device", help=DEVICE_CHOICES)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--extra", nargs="*", help="detectron2 overrides: KEY VALUE ...")


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: ``--out`` on a command without it must not be read as ``--outline-loss``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)


def parser() -> argparse.ArgumentParser:
    from model.evaluation.evaluate import DISPLAYS

    root = _Parser(prog="birads", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("import", help="convert a dataset to Label Studio and COCO JSON")
    _add_data(p)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--as-predictions", action="store_true",
                   help="write expert boxes as Label Studio predictions, not annotations")
    p.add_argument("--document-root", type=Path,
                   help="reference images as /data/local-files/?d=... relative to this root")
    p.set_defaults(run=cmd_import)

    p = commands.add_parser("train", help="train a detector; writes a model directory")
    _add_data(p)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--without-birads-4", action="store_true", default=None,
                   help="leave out images with BI-RADS 4 lesions (a model to split 4 into 4A/4B/4C)")
    _train_options(p)
    p.add_argument("--probe", action="store_true",
                   help="train nothing: time a few iterations of these settings, print seconds per iteration")
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("pretrain", help="pretrain the detector's ResNet trunk as a classifier "
                            "of lesion crops; writes a directory for `train --weights`")
    _add_data(p)
    p.add_argument("--out", required=True, type=Path)
    _crop_options(p)
    p.add_argument("--probe", action="store_true",
                   help="train nothing: time a few batches of these settings, print seconds per epoch")
    p.set_defaults(run=cmd_pretrain)

    p = commands.add_parser("box-classifier", help="train a classifier of lesion crops that re-names a "
                            "model's boxes; written into the model directory (box_classifier/)")
    _add_data(p)
    p.add_argument("--model", required=True, type=Path, help="the model directory it serves")
    _crop_options(p)
    p.add_argument("--blend", type=float, help="the classifier's share of each box's category "
                   "probabilities (default 0.5)")
    p.add_argument("--rescore", type=float, help="its share, by P(lesion), of the rank that picks each "
                   "image's top box and orders AP; scores and thresholds stay the detector's (default 0: "
                   "the score ranks)")
    p.add_argument("--misplaced-share", type=float, help="share of the background crops drawn beside "
                   "or around a lesion, missing it (default 0): teaches P(lesion) a misplaced box")
    p.add_argument("--partial-share", type=float, help="share of those misplaced crops drawn inside a "
                   "lesion on part of it (IoU 0.15-0.45; default 0): teaches P(lesion) a box on part of one")
    p.set_defaults(run=cmd_box_classifier)

    p = commands.add_parser("predict", help="detect lesions in images (JSON lines)")
    _inference_options(p)
    p.add_argument("--split-4-with", type=Path, metavar="MODEL",
                   help="a model trained --without-birads-4: splits BI-RADS 4 boxes into 4A/4B/4C")
    p.add_argument("images", nargs="+")
    p.set_defaults(run=cmd_predict)

    p = commands.add_parser("evaluate", help="metrics, report and pictures for a model on data")
    _add_data(p)
    _inference_options(p)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--biopsy-threshold", default="4", type=_category,
                   help="the lowest BI-RADS category called malignant (e.g. 4, 4B, 5)")
    p.add_argument("--image-decision", choices=("shown", "top"), default="shown",
                   help="image category: most suspicious shown box, or most confident box at any score")
    p.add_argument("--split-4-with", type=Path, metavar="MODEL",
                   help="a model trained --without-birads-4: splits BI-RADS 4 boxes into 4A/4B/4C")
    _cost_options(p)
    p.set_defaults(run=cmd_evaluate)

    p = commands.add_parser("fit-cuts", help="fit a --without-birads-4 model's 4A/4B/4C cuts on "
                            "data with subcategories, and where the data has BI-RADS 5 and 1-3 images "
                            "its Table II cut on P(5) (reported by evaluate); stored in the model directory")
    _add_data(p)
    _inference_options(p)
    p.set_defaults(run=cmd_fit_cuts)

    p = commands.add_parser("simulate", help="the labelling loop, simulated round by round")
    _add_data(p)
    p.add_argument("--holdout-splits", nargs="+", required=True, help="fixed evaluation splits (e.g. fold4)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--initial", type=int, default=20, help="expert-labelled images to start from")
    p.add_argument("--round-size", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--order", choices=("random", "uncertain"), default="random")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--sim-seed", type=int, default=0, help="order of the unlabelled pool")
    p.add_argument("--display", choices=DISPLAYS, default="threshold",
                   help="what the expert is shown: boxes >= --score-threshold, also the most confident "
                   "box (top1), or only the most confident box (top1-only)")
    _box_voting_options(p)  # the expert is shown what the backend would serve
    _cost_options(p)
    _train_options(p)  # --epochs, --base-lr: a round 0 that trains from nothing
    p.add_argument("--fine-tune-epochs", type=float,
                   help="each fine-tune's augmented epochs (default: the training jobs', FINE_TUNE_EPOCHS)")
    p.add_argument("--fine-tune-lr", type=float,
                   help="each fine-tune's learning rate (default: the training jobs', FINE_TUNE_LR)")
    p.add_argument("--fine-tune-freeze", nargs="*", choices=sorted(fine_tuning.FREEZABLE), metavar="PART",
                   help="parts of the detector each fine-tune holds as loaded: category-head (default: the "
                   "training jobs', FINE_TUNE_FREEZE; none given: none)")
    p.add_argument("--classifier-min-lesions", type=int, metavar="N",
                   help="retrain the box classifier only from N lesions among the labelled images, else carry "
                   "the served version's (default: the jobs', FINE_TUNE_CLASSIFIER_MIN_LESIONS)")
    p.add_argument("--replay-data", metavar="FORMAT:PATH",
                   help="images to replay beside the labelled ones in each fine-tune (the starter's own "
                   "training data, as the jobs' REPLAY_DATA)")
    p.add_argument("--replay-splits", nargs="*", help="only these splits of --replay-data (e.g. fold1 fold2 fold3)")
    p.add_argument("--replay-ratio", type=float, metavar="RATIO",
                   help="replayed images per labelled image (default: the jobs', REPLAY_RATIO)")
    p.add_argument("--holdout-fraction", type=float, default=promotion.HOLDOUT_FRACTION,
                   help="share of the labelled images each round holds out to compare versions on, as the "
                   "jobs' HOLDOUT_FRACTION (0: every new version served)")
    p.add_argument("--promote-metric", choices=promotion.PROMOTE_METRICS, default=promotion.PROMOTE_METRIC,
                   help="held-out metric a new version must not lose to be served (the jobs' PROMOTE_METRIC)")
    p.add_argument("--promote-tolerance", type=float, default=promotion.PROMOTE_TOLERANCE,
                   help="how much of it a new version may lose and still be served (PROMOTE_TOLERANCE)")
    p.set_defaults(run=cmd_simulate)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except (DataError, UnknownCategory, OSError) as exc:  # OSError: a path that cannot be used, a full disk
        print(f"birads {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
