"""One module per ``smil`` subcommand; each exposes ``register(subparsers)``."""
