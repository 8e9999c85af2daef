"""Lab tier: the program against network-namespace hosts (root and tools/apt-packages.txt)."""
