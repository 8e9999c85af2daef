"""What CI and the repository's own upkeep run.

- ``setup-apt.sh`` + ``apt-packages.txt``: the machine's apt packages (`make setup`);
- ``reference``: the generated config and outputs reference (`make reference`; a unit test
  runs ``--check``);
- ``known_keys``: regenerates components/render/known_keys/ from the programs' sources;
- ``mr_note``: the preview job's merge-request note (.gitlab-ci.yml).
"""
