"""Developer tools for forgeway, grouped by purpose into packages: lab, applier, stack, ci

(tools/README.md). Run from the repository root as ``python -m tools.<package>[.<module>]``.
"""
