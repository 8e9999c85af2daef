"""Developer tools for forgeway, run as ``python -m tools.<name>`` from the repository root."""
