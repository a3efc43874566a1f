"""The worker pool runtime: supervisor, worker processes, periodic jobs, restart policy,
settings and the systemd notify protocol (``eventbus-supervisor``)."""
