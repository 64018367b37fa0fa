"""The per-host daemon and its roles (primary, backup, standby), failure detection, go-live, clones
and re-protection. Never imports ftorch.ops.
"""
