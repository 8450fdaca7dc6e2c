"""Training numbers and integrations that would fail late (or train something else) are refused when the config is
made, with one line naming the field: from Python, a recipe and `--set` alike (they all build the config)."""

import math

import pytest

from hf_unlearn.trainers import METHODS, GAConfig
from hf_unlearn.trainers.base_config import _REPORTING_PACKAGES


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_train_epochs": math.inf}, "num_train_epochs=inf is not a finite number of epochs"),
        ({"num_train_epochs": math.nan}, "num_train_epochs=nan is not a finite number of epochs"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps=0 must be >= 1"),
        ({"learning_rate": -1e-5}, "learning_rate=-1e-05 must be a finite number >= 0"),
        ({"learning_rate": math.inf}, "learning_rate=inf must be a finite number >= 0"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size=0 must be >= 1"),
        ({"per_device_train_batch_size": -4}, "per_device_train_batch_size=-4 must be >= 1"),
        ({"per_device_eval_batch_size": 0}, "per_device_eval_batch_size=0 must be >= 1"),
    ],
)
def test_bad_training_numbers_are_refused(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        GAConfig(output_dir="x", **settings)


def test_every_method_config_checks_them():
    required = {"PDU": {"retain_loss_bound": 1.0}}  # fields a method cannot default
    for name, (config_class, _) in METHODS.items():
        with pytest.raises(ValueError, match="gradient_accumulation_steps"):  # IAU: "leave it at 1, got 0"
            config_class(output_dir="x", gradient_accumulation_steps=0, **required.get(name, {}))


def test_a_missing_reporting_integration_is_refused_before_training(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in _REPORTING_PACKAGES["tensorboard"] else real(name)
    )
    with pytest.raises(
        ValueError, match=r"report_to='tensorboard' needs the tensorboard package, which is not installed"
    ):
        GAConfig(output_dir="x", report_to="tensorboard")
    with pytest.raises(ValueError, match="needs the tensorboard package"):
        GAConfig(output_dir="x", report_to=["none", "tensorboard"])
    GAConfig(output_dir="x", report_to="none")  # nothing to check
