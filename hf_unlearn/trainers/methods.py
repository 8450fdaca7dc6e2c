"""`METHODS`: recipe name -> (config class, trainer class)."""

from .ga_config import GAConfig
from .ga_trainer import GATrainer
from .graddiff_config import GradDiffConfig
from .graddiff_trainer import GradDiffTrainer
from .imu_config import IMUConfig
from .imu_trainer import IMUTrainer
from .npo_config import NPOConfig
from .npo_trainer import NPOTrainer
from .simnpo_config import SimNPOConfig
from .simnpo_trainer import SimNPOTrainer

__all__ = ["METHODS"]

METHODS = {
    "GA": (GAConfig, GATrainer),
    "GradDiff": (GradDiffConfig, GradDiffTrainer),
    "NPO": (NPOConfig, NPOTrainer),
    "SimNPO": (SimNPOConfig, SimNPOTrainer),
    "IMU": (IMUConfig, IMUTrainer),
}
