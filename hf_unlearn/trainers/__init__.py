"""One config + one trainer per unlearning method; `METHODS` maps recipe names to them.

Exports load lazily, so `METHOD_NAMES` (and a recipe's method names) can be checked without importing transformers.
"""

from .._lazy import lazy_exports

# The keys of `METHODS`, in its order (a test keeps the two equal).
METHOD_NAMES = ("GA", "GradDiff", "NPO", "SimNPO", "IMU", "IAU", "MU-Mis")

_EXPORTS = {
    "METHODS": ".methods",
    "UnlearnConfig": ".base_config",
    "UnlearnTrainer": ".base_trainer",
    "GAConfig": ".ga_config",
    "GATrainer": ".ga_trainer",
    "ga_loss": ".ga_trainer",
    "GradDiffConfig": ".graddiff_config",
    "GradDiffTrainer": ".graddiff_trainer",
    "graddiff_loss": ".graddiff_trainer",
    "GradientRestriction": ".gradient_restriction_config",
    "GradientRestrictionMixin": ".gradient_restriction",
    "GradientRestrictionTrainer": ".gradient_restriction",
    "gradient_restricted_loss": ".gradient_restriction",
    "IAUConfig": ".iau_config",
    "IAUTrainer": ".iau_trainer",
    "iau_loss": ".iau_trainer",
    "IMUConfig": ".imu_config",
    "IMUTrainer": ".imu_trainer",
    "imu_loss": ".imu_trainer",
    "MUMisConfig": ".mumis_config",
    "MUMisTrainer": ".mumis_trainer",
    "input_sensitivities": ".mumis_trainer",
    "mumis_loss": ".mumis_trainer",
    "NPOConfig": ".npo_config",
    "NPOTrainer": ".npo_trainer",
    "npo_loss": ".npo_trainer",
    "ForgetBatch": ".step",
    "StepCounts": ".step",
    "normalized_sum": ".step",
    "SimNPOConfig": ".simnpo_config",
    "SimNPOTrainer": ".simnpo_trainer",
    "simnpo_loss": ".simnpo_trainer",
}
__all__ = ["METHOD_NAMES", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
