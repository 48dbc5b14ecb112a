"""``python -m stablenew`` is the CLI (what the embedded stack spawns, avoiding PATH issues)."""

from stablenew.cli.app import main

main()
