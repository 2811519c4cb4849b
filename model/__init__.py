"""SpeechFlow model package: features, network, flow matching + sampler, checkpoints and the task pipeline."""

from .config import PRESETS, FlowConfig, ModelConfig, NetworkConfig, preset
from .errors import AudioError, CheckpointError, ConfigError, SpeechFlowError
from .features import MelConfig, MelSpectrogram
from .modeling import SpeechFlowModel
from .pipeline import SpeechFlowPipeline

__all__ = [
    "PRESETS", "AudioError", "CheckpointError", "ConfigError", "FlowConfig", "MelConfig", "MelSpectrogram",
    "ModelConfig", "NetworkConfig", "SpeechFlowError", "SpeechFlowModel", "SpeechFlowPipeline", "preset",
]
