"""CLI subcommand modules; each defines register(subparsers)."""
