"""SpeechFlow command line (``speechflow``); the library lives in the ``model``, ``training`` and ``service``
packages."""

__version__ = "0.1.0"
