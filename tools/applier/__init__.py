"""The lab applier: the program run under the mock monitor with the providers' effects done for
real (docs/applier.md), and the offline plan that decides the same way without applying.

- ``apply``: the applier (``python -m tools.applier``, a JSON request on stdin);
- ``docker``, ``tls``, ``refresh``, ``state``: its pulumi-docker and pulumi-tls emulations,
  ``refresh``, and its state file;
- ``docker_api``: the Docker Engine API over ``ssh … docker system dial-stdio``;
- ``gitlab``, ``gitlab_api``: the pulumi-gitlab provider and ``UserRunner`` over GitLab's REST API;
- ``local_command``: ``command:local:Command`` on the deploying machine;
- ``plan``: `make preview` (``python -m tools.applier.plan --stack lab|prod|NAME``), and
  ``plan_text``: the plan's model and how it is printed.
"""
