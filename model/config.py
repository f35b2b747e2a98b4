"""Training settings and the detectron2 config they produce (R101-FPN Faster R-CNN by default).

``TrainSettings`` is the one typed place for every training knob; ``build_config`` turns it into
a detectron2 ``CfgNode``: the model-zoo base config, then ``model/configs/birads.yaml`` (our
product defaults, the paper's 800 px), then the settings.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg

from model.io import DataError
from model.records import DEVICE_CHOICES, DEVICE_NAME

log = logging.getLogger(__name__)
PRODUCT_CONFIG = Path(__file__).parent / "configs" / "birads.yaml"
SCRATCH_CONFIG = Path(__file__).parent / "configs" / "from_scratch.yaml"
ZOO_PREFIX = "zoo:"
TRUNK_FILE = "trunk.pth"            # `birads pretrain`'s weights (model.pretrain) ...
PRETRAIN_REPORT = "pretrain.json"   # ... and its settings and log, beside them


@dataclass
class TrainSettings:
    base_config: str = "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"
    # "" (from scratch), a local .pth/.pkl, a URL, "zoo:<config>" (that config's COCO weights) or
    # a model directory (fine-tune a previous version).
    weights: str = ""
    image_size: int = 800          # the paper's 800x800: short side 800, long side at most 800;
                                   # 0: the parent model's sizes (fine-tuning), else the product's
    max_size: int | None = None    # longest side; None: image_size (the paper's square cap)
    epochs: float = 12.0           # passes over the augmented data; sets max_iter unless given
    max_iter: int | None = None
    batch_size: int = 2
    base_lr: float = 0.02
    lr_drop_at: float = 0.8        # LR divided by 10 at this fraction of the schedule
    warmup_iters: int = 100
    augment_factor: int = 10       # the paper's tenfold augmentation, drawn on the fly
    rotation_degrees: float = 10.0
    box_rotation: str = "corners"  # how a rotation turns a box into a training box: one of BOX_ROTATIONS
    roi_align_fp32: bool = False   # pool box features at the exact corners under bf16 (model.roi_pooling)
    brightness: tuple[float, float] = (0.8, 1.2)
    roi_per_image: int = 128       # one lesion per image: 512 sampled ROIs is mostly background
    class_balanced: bool = False   # repeat images of rare categories (RepeatFactorTrainingSampler)
    # A category on fewer than this fraction of images has its images repeated sqrt(t / f) times
    # (detectron2's default 0.0 would repeat nothing).
    repeat_threshold: float = 0.3
    without_birads_4: bool = False  # the paper's second model: no BI-RADS 4, later splits 4 into 4A/4B/4C
    label_set: tuple[str, ...] = ()  # the categories the model must name (a project's label config can
                                     # name only these: 4A/4B/4C, or plain 4); empty: what the boxes need
    seed: int = 42
    checkpoint_period: int = 500
    log_period: int = 20
    bf16: bool = False             # torch.autocast bfloat16 + channels_last (faster on AVX-512 CPUs)
    device: str = "auto"           # "auto", "cpu" or "cuda"
    num_workers: int = 2
    extra: list[str] = field(default_factory=list)  # detectron2 KEY VALUE overrides
    frozen: tuple[str, ...] = ()   # parameter-name prefixes left as loaded (model.fine_tuning.FREEZABLE)
    classifier_min_lesions: int = 0  # a fine-tune retrains its parent's box classifier only with this
                                     # many lesions among its project's images; else carries it as it is

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str) -> str:
    """"auto": a GPU where there is one, else the CPU; "cpu"; "cuda" or "cuda:N" where one exists."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(DEVICE_NAME, device):
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DataError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        return device
    raise DataError(f"device {device!r}: expected {DEVICE_CHOICES}")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU a figure came from: its model name with family and model numbers (cloud guests
    often show only "AMD EPYC", whose generations differ twofold in speed and in number formats)."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    first = itertools.takewhile(str.strip, lines)  # the first processor's block: all cores alike
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first)}
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (cpu family {fields['cpu family']} model {fields['model']})"
    return name


def cpu_supports_bf16() -> bool:
    """True where bfloat16 matmuls run natively (AVX-512 BF16 or AMX); elsewhere bf16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_supported(device: str) -> bool:
    """Whether ``device`` runs bfloat16 natively: a GPU of compute capability 8 or above (a T4 or
    V100 emulates it, slower than float32, which torch's own check counts as support), a CPU with
    AVX-512 BF16 or AMX."""
    if device.startswith("cuda"):
        index = torch.device(device).index
        return torch.cuda.is_available() and torch.cuda.get_device_capability(index)[0] >= 8
    return cpu_supports_bf16()


def use_bf16(asked: bool, device: str) -> bool:
    """Train under bf16 only where it was asked for and the hardware runs it natively. A CPU
    without AVX-512 BF16 or AMX emulates it (on a 2-core AVX2-only AMD EPYC a 3x3 convolution,
    batch 64, 256 channels, 28x28, took 14.4 s in bf16 against 0.45 s in float32)."""
    if asked and not bf16_supported(device):
        log.warning("bf16 is on (asked for or by default), but this %s has no native bfloat16: "
                    "training in float32 instead (emulated bf16 is many times slower)", device)
        return False
    return asked


def iterations(settings: TrainSettings, n_images: int) -> int:
    if settings.max_iter is not None:
        return settings.max_iter
    samples = settings.epochs * n_images * settings.augment_factor
    return max(1, math.ceil(samples / settings.batch_size))


def _trunk_file(weights: str) -> Path | None:
    """``birads pretrain``'s output (a directory holding trunk.pth) as a weights file."""
    trunk = Path(weights) / TRUNK_FILE if weights else None
    return trunk if trunk is not None and trunk.is_file() else None


def _check_trunk(weights: str, base_config: str) -> None:
    """A pretrained trunk only fits the architecture it was pretrained as."""
    report = Path(weights) / PRETRAIN_REPORT
    trained_as = json.loads(report.read_text())["settings"]["base_config"] if report.is_file() else None
    if trained_as and trained_as != base_config:
        raise DataError(f"{weights}: trunk pretrained for {trained_as}, not {base_config}")


def resolve_weights(weights: str) -> str:
    """A checkpoint path or URL detectron2's checkpointer can load; "" for none."""
    if weights.startswith(ZOO_PREFIX):
        return _zoo(model_zoo.get_checkpoint_url, weights[len(ZOO_PREFIX):])
    trunk = _trunk_file(weights)
    if trunk:
        return str(trunk)
    if weights and Path(weights).is_dir():
        return str(Path(weights) / "model_final.pth")
    if weights and "://" not in weights and not Path(weights).is_file():
        raise FileNotFoundError(f"initial weights {weights}: no such file or model directory")
    return weights


def _zoo(lookup, name: str) -> str:
    """detectron2's model zoo entry ``name`` (a config path or weights URL), or a DataError."""
    try:
        return lookup(name)
    except RuntimeError:
        raise DataError(f"{name}: not in detectron2's model zoo (e.g. COCO-Detection/"
                        "faster_rcnn_R_101_FPN_3x.yaml)") from None


def build_config(settings: TrainSettings, classes: list[str], n_images: int,
                 output_dir: str | Path) -> CfgNode:
    """The full detectron2 config for a training run on ``n_images`` images of ``classes``."""
    previous = Path(settings.weights) if settings.weights else None
    cfg = get_cfg()
    trunk = _trunk_file(settings.weights)
    if trunk:
        _check_trunk(settings.weights, settings.base_config)
    if previous is not None and previous.is_dir() and not trunk:
        # Fine-tuning a previous version: its architecture (e.g. GN from scratch) must match.
        cfg.merge_from_file(str(previous / "config.yaml"))
    else:
        cfg.merge_from_file(_zoo(model_zoo.get_config_file, settings.base_config))
        cfg.merge_from_file(str(PRODUCT_CONFIG))
        if not settings.weights:
            # Frozen BN with random weights makes activations explode and yields no proposals.
            cfg.merge_from_file(str(SCRATCH_CONFIG))
    iters = iterations(settings, n_images)
    cfg.MODEL.WEIGHTS = resolve_weights(settings.weights)
    cfg.MODEL.DEVICE = resolve_device(settings.device)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = settings.roi_per_image
    if settings.image_size:
        cfg.INPUT.MIN_SIZE_TRAIN = (settings.image_size,)
        cfg.INPUT.MAX_SIZE_TRAIN = settings.max_size or settings.image_size
        cfg.INPUT.MIN_SIZE_TEST = settings.image_size
        cfg.INPUT.MAX_SIZE_TEST = settings.max_size or settings.image_size
    cfg.SOLVER.IMS_PER_BATCH = settings.batch_size
    cfg.SOLVER.BASE_LR = settings.base_lr
    cfg.SOLVER.MAX_ITER = iters
    drop = int(iters * settings.lr_drop_at)
    cfg.SOLVER.STEPS = (drop,) if 0 < drop < iters else ()  # too short a run for a drop
    cfg.SOLVER.WARMUP_ITERS = min(settings.warmup_iters, max(1, iters // 4))
    cfg.SOLVER.CHECKPOINT_PERIOD = settings.checkpoint_period
    cfg.DATALOADER.NUM_WORKERS = settings.num_workers
    cfg.DATALOADER.SAMPLER_TRAIN = ("RepeatFactorTrainingSampler" if settings.class_balanced
                                    else "TrainingSampler")
    cfg.DATALOADER.REPEAT_THRESHOLD = settings.repeat_threshold
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = settings.seed
    cfg.OUTPUT_DIR = str(output_dir)
    try:
        cfg.merge_from_list(list(settings.extra))
    except (AssertionError, KeyError, ValueError) as exc:  # yacs: odd count, unknown key, wrong type
        given = " ".join(map(str, settings.extra))
        raise DataError(f"--extra {given}: not detectron2 KEY VALUE pairs ({exc})") from None
    cfg.freeze()
    return cfg
