"""The operator's side: the CLI and the operations on a pair (up, status, down, failover), reaching
hosts only through ftorch.rpc.
"""
