"""The lab: `make lab`'s network-namespace topology on this machine and what runs in it.

- ``topology``: `make lab` / `make lab-down` / reboot (``python -m tools.lab up|down|refresh|reboot``);
  its parts: ``layout`` (the fixed addresses, hosts and users), ``network`` (namespaces, veths,
  NAT), ``users`` (the deployer's login users and sudo rights), ``hosts`` (booting each host,
  its dockerd), ``config`` (the lab stack's config with what the lab made filled in);
- ``nspawn``: hosts that boot (systemd in systemd-nspawn); ``binfmt``: the machine's binfmt_misc;
- ``cgnat``: the CGNAT forgetting the home side's mappings (``python -m tools.lab.cgnat forget``);
- ``docker``: a real dockerd per lab host; ``images``: its images, built offline from Debian;
- ``aarch64_hello``: the arm64 program the multiarch check runs; ``standin_image/``: the
  stand-ins (GitLab, runner, binfmt) the images carry.
"""
