"""`METHODS`: recipe name -> (config class, trainer class)."""

from .ga_config import GAConfig
from .ga_trainer import GATrainer
from .graddiff_config import GradDiffConfig
from .graddiff_trainer import GradDiffTrainer
from .iau_config import IAUConfig
from .iau_trainer import IAUTrainer
from .imu_config import IMUConfig
from .imu_trainer import IMUTrainer
from .mumis_config import MUMisConfig
from .mumis_trainer import MUMisTrainer
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
    "IAU": (IAUConfig, IAUTrainer),
    "MU-Mis": (MUMisConfig, MUMisTrainer),
}
