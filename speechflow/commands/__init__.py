"""The ``speechflow`` subcommands, one module per concern; each adds its parsers with ``add_commands``."""
