"""One config + one trainer per unlearning method; `METHODS` maps recipe names to them."""

from .base_config import UnlearnConfig
from .base_trainer import UnlearnTrainer
from .ga_config import GAConfig
from .ga_trainer import GATrainer, ga_loss
from .graddiff_config import GradDiffConfig
from .graddiff_trainer import GradDiffTrainer, graddiff_loss
from .imu_config import IMUConfig
from .imu_trainer import IMUTrainer, imu_loss
from .npo_config import NPOConfig
from .npo_trainer import NPOTrainer, npo_loss
from .simnpo_config import SimNPOConfig
from .simnpo_trainer import SimNPOTrainer, simnpo_loss

METHODS = {
    "GA": (GAConfig, GATrainer),
    "GradDiff": (GradDiffConfig, GradDiffTrainer),
    "NPO": (NPOConfig, NPOTrainer),
    "SimNPO": (SimNPOConfig, SimNPOTrainer),
    "IMU": (IMUConfig, IMUTrainer),
}

__all__ = [
    "METHODS",
    "GAConfig",
    "GATrainer",
    "GradDiffConfig",
    "GradDiffTrainer",
    "IMUConfig",
    "IMUTrainer",
    "NPOConfig",
    "NPOTrainer",
    "SimNPOConfig",
    "SimNPOTrainer",
    "UnlearnConfig",
    "UnlearnTrainer",
    "ga_loss",
    "graddiff_loss",
    "imu_loss",
    "npo_loss",
    "simnpo_loss",
]
