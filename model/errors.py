"""Exceptions the project raises on purpose: callers (CLI, service) map them to clear messages and status codes."""


class SpeechFlowError(Exception):
    """Base class for every error SpeechFlow raises deliberately."""


class AudioError(SpeechFlowError, ValueError):
    """Audio that cannot be used: undecodable, empty, non-finite, or outside the limits."""


class CheckpointError(SpeechFlowError):
    """A model directory that is missing, malformed, or does not match the network it should rebuild."""


class ConfigError(SpeechFlowError, ValueError):
    """An invalid configuration value or an unknown preset/solver name."""


class SettingError(ConfigError):
    """A ConfigError about one named request setting (the service's 422 names ``param``)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param
