"""Lab tier: the program against network-namespace hosts (root and tools/ci/apt-packages.txt)."""
