"""Each detectron2 0.6 fix in model/compat.py, proven on the real installed packages."""

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import model.compat  # noqa: F401


def test_c_extension_stand_in_answers_introspection_and_refuses_ops():
    from detectron2 import _C

    assert _C.has_cuda() is False
    assert isinstance(_C.get_compiler_version(), str)
    assert isinstance(_C.get_cuda_version(), str)
    with pytest.raises(AttributeError, match="built without its C"):
        _C.nms_rotated  # noqa: B018
    assert hasattr(_C, "ROIAlign_forward") is False


def test_collect_env_runs_with_the_stand_in():
    from detectron2.utils.collect_env import collect_env_info

    assert "detectron2" in collect_env_info()


def test_pillow_linear_alias_is_bilinear():
    assert Image.LINEAR == Image.BILINEAR
    from detectron2.data.transforms import ResizeTransform

    resized = ResizeTransform(4, 4, 8, 8).apply_image(np.zeros((4, 4, 3), np.uint8))
    assert resized.shape == (8, 8, 3)


@pytest.mark.parametrize("name, builtin", [("int", int), ("float", float), ("object", object)])
def test_numpy_removed_aliases_are_the_builtins(name, builtin):
    assert getattr(np, name) is builtin


def test_model_zoo_finds_configs_without_pkg_resources():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml")
    assert path.endswith("faster_rcnn_R_101_FPN_3x.yaml")
    assert "RESNETS" in open(path).read()


def test_flush_denormal_is_on():
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a denormal
    assert tiny.item() == 0.0


def test_fixes_apply_in_a_fresh_interpreter_before_detectron2():
    code = ("import model.compat, detectron2.engine, detectron2.model_zoo, "
            "detectron2.evaluation; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_apply_is_idempotent():
    importlib.reload(model.compat)
    model.compat.apply()
    assert np.float is float


def test_any_model_module_applies_the_fixes_first():
    """Import sorters may put detectron2 imports above ours; the package itself applies them."""
    code = "import sys; import model.config; print('pkg_resources' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
