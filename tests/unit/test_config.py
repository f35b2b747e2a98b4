"""TrainSettings -> detectron2 config: from scratch vs pretrained, sizes, schedule, weights."""

import pytest

from model import config
from model.config import TrainSettings, build_config, cpu_name, iterations, resolve_weights, use_bf16


def test_product_defaults_are_the_papers():
    cfg = build_config(TrainSettings(), ["2", "3", "4", "5"], n_images=100, output_dir="/tmp/x")
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    assert cfg.INPUT.MIN_SIZE_TRAIN == (800,) and cfg.INPUT.MAX_SIZE_TRAIN == 800
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 4
    # from scratch: no frozen batch-norm, no frozen stages
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.SOLVER.MAX_ITER == iterations(TrainSettings(), 100) == 100 * 10 * 12 // 2
    assert cfg.SOLVER.STEPS == (int(cfg.SOLVER.MAX_ITER * 0.8),)


def test_pretrained_zoo_weights_keep_frozen_bn():
    cfg = build_config(TrainSettings(weights="zoo:COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"), ["2", "3"],
                       n_images=10, output_dir="/tmp/x")
    assert cfg.MODEL.WEIGHTS.startswith("https://") and cfg.MODEL.WEIGHTS.endswith(".pkl")
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2


def test_weights_from_local_file_directory_or_missing(tmp_path):
    checkpoint = tmp_path / "r101.pth"
    checkpoint.write_bytes(b"x")
    assert resolve_weights(str(checkpoint)) == str(checkpoint)
    assert resolve_weights(str(tmp_path)) == str(tmp_path / "model_final.pth")
    assert resolve_weights("https://example.org/w.pkl") == "https://example.org/w.pkl"
    assert resolve_weights("") == ""
    with pytest.raises(FileNotFoundError, match="no such file"):
        resolve_weights(str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("iters, steps", [(1, ()), (2, (1,)), (10, (8,))])
def test_short_schedules_are_valid(iters, steps):
    cfg = build_config(TrainSettings(max_iter=iters), ["2", "3"], n_images=4, output_dir="/tmp/x")
    assert cfg.SOLVER.MAX_ITER == iters and cfg.SOLVER.STEPS == steps


def test_class_balanced_sampling_repeats_rare_categories():
    from detectron2.data.samplers import RepeatFactorTrainingSampler

    settings = TrainSettings(class_balanced=True, repeat_threshold=0.5)
    cfg = build_config(settings, ["2", "5"], n_images=10, output_dir="/tmp/x")
    assert cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler"
    # nine images of category 0, one of category 1: the rare one is repeated sqrt(0.5 / 0.1) times
    dataset = [{"annotations": [{"category_id": 0}]}] * 9 + [{"annotations": [{"category_id": 1}]}]
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dataset, cfg.DATALOADER.REPEAT_THRESHOLD)
    assert factors[0].item() == pytest.approx(1.0) and factors[-1].item() == pytest.approx(5 ** 0.5)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_used_only_where_the_cpu_runs_it_natively(monkeypatch, caplog, native):
    # An AVX2-only CPU emulates bf16, many times slower than float32: asking for it trains in float32.
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: native)
    assert use_bf16(True, "cpu") is native
    assert ("no native bfloat16" in caplog.text) is not native
    assert use_bf16(False, "cpu") is False  # never turned on where it was not asked for


@pytest.mark.parametrize("settings, expected", [
    (TrainSettings(extra=["SOLVER.BASE_LR"]), "not detectron2 KEY VALUE pairs"),
    (TrainSettings(extra=["SOLVER.NO_SUCH_KEY", "1"]), "not detectron2 KEY VALUE pairs"),
    (TrainSettings(weights="zoo:COCO-Detection/typo.yaml"), "not in detectron2's model zoo"),
    (TrainSettings(base_config="COCO-Detection/typo.yaml"), "not in detectron2's model zoo"),
])
def test_settings_detectron2_cannot_take_are_a_data_error(settings, expected):
    from model.io import DataError

    with pytest.raises(DataError, match=expected):
        build_config(settings, ["2", "3"], n_images=10, output_dir="/tmp/x")


@pytest.mark.parametrize("device, expected", [("gpu", "expected auto, cpu, cuda or cuda:N"),
                                              ("cuda:99", "this machine has")])
def test_devices_that_do_not_exist_are_a_data_error(device, expected):
    from model.config import resolve_device
    from model.io import DataError

    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(DataError, match=expected):
        resolve_device(device)


def test_a_cpu_is_named_with_its_family_and_model(tmp_path):
    # cloud guests often name only "AMD EPYC": the numbers tell Zen 1 (float32 only) from Zen 5 (bf16)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                    "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n\nprocessor\t: 1\n")
    assert cpu_name(info) == "AMD EPYC (cpu family 25 model 1)"
    info.write_text("model name\t: Some ARM core\n")
    assert cpu_name(info) == "Some ARM core"
    assert cpu_name(tmp_path / "none")  # no /proc: the platform's word for it, never an error


def test_bf16_counts_as_supported_only_on_gpus_that_run_it_natively(monkeypatch):
    """A T4 or V100 (compute capability 7) emulates bfloat16, slower than float32: BF16=auto must
    not pick it there. The configured device's own capability decides, not the current one's."""
    import torch

    from model.config import bf16_supported

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: asked.append(index) or
                        {0: (7, 5), 1: (8, 0)}[index or 0])
    assert not bf16_supported("cuda") and not bf16_supported("cuda:0") and bf16_supported("cuda:1")
    assert asked == [None, 0, 1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not bf16_supported("cuda")


def test_a_trunk_that_does_not_fit_the_detector_is_named_tensor_by_tensor():
    import torch

    from model.train import trunk_misfits

    trunk = {"backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7),
             "backbone.bottom_up.res4.22.conv1.weight": torch.zeros(256, 1024, 1, 1)}
    fits = {"backbone.bottom_up.stem.conv1.weight": torch.ones(64, 3, 7, 7),
            "backbone.bottom_up.res4.22.conv1.weight": torch.ones(256, 1024, 1, 1), "roi_heads.x": torch.ones(1)}
    assert trunk_misfits(trunk, fits) == []
    r50 = {"backbone.bottom_up.stem.conv1.weight": torch.ones(64, 3, 7, 7)}  # no res4 block 22
    assert trunk_misfits(trunk, r50) == ["backbone.bottom_up.res4.22.conv1.weight"]
    other_stem = dict(fits, **{"backbone.bottom_up.stem.conv1.weight": torch.ones(64, 1, 7, 7)})
    assert trunk_misfits(trunk, other_stem) == ["backbone.bottom_up.stem.conv1.weight"]
