"""`METHODS`: recipe name -> (config class, trainer class); `METHOD_PRESETS`: recipe name -> its named settings
(a recipe entry's `preset:` key)."""

from .ceu_config import CEUConfig
from .ceu_trainer import CEUTrainer
from .ga_config import GAConfig
from .ga_trainer import GATrainer
from .graddiff_config import GradDiffConfig
from .graddiff_trainer import GradDiffTrainer
from .iau_config import IAUConfig
from .iau_trainer import IAUTrainer
from .idkdpo_config import IdkDPOConfig
from .idkdpo_trainer import IdkDPOTrainer
from .idknll_config import IdkNLLConfig
from .idknll_trainer import IdkNLLTrainer
from .imu_config import IMUConfig
from .imu_trainer import IMUTrainer
from .megd_config import MEGDConfig
from .megd_trainer import MEGDTrainer
from .mumis_config import MUMisConfig
from .mumis_trainer import MUMisTrainer
from .npo_config import NPOConfig
from .npo_trainer import NPOTrainer
from .pdu_config import PDUConfig
from .pdu_trainer import PDUTrainer
from .rmu_config import RMU_PRESETS, RMUConfig
from .rmu_trainer import RMUTrainer
from .satimp_config import SatImpConfig
from .satimp_trainer import SatImpTrainer
from .simnpo_config import SimNPOConfig
from .simnpo_trainer import SimNPOTrainer
from .undial_config import UNDIALConfig
from .undial_trainer import UNDIALTrainer
from .wga_config import WGAConfig
from .wga_trainer import WGATrainer

__all__ = ["METHODS", "METHOD_PRESETS"]

METHODS = {
    "GA": (GAConfig, GATrainer),
    "GradDiff": (GradDiffConfig, GradDiffTrainer),
    "NPO": (NPOConfig, NPOTrainer),
    "SimNPO": (SimNPOConfig, SimNPOTrainer),
    "IMU": (IMUConfig, IMUTrainer),
    "IAU": (IAUConfig, IAUTrainer),
    "MU-Mis": (MUMisConfig, MUMisTrainer),
    "IdkNLL": (IdkNLLConfig, IdkNLLTrainer),
    "IdkDPO": (IdkDPOConfig, IdkDPOTrainer),
    "RMU": (RMUConfig, RMUTrainer),
    "UNDIAL": (UNDIALConfig, UNDIALTrainer),
    "WGA": (WGAConfig, WGATrainer),
    "SatImp": (SatImpConfig, SatImpTrainer),
    "CE-U": (CEUConfig, CEUTrainer),
    "ME+GD": (MEGDConfig, MEGDTrainer),
    "PDU": (PDUConfig, PDUTrainer),
}

# A recipe entry's `preset: NAME` takes these settings (under the entry's own keys): `build_method_config`.
METHOD_PRESETS = {"RMU": RMU_PRESETS}
