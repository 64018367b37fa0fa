"""The output rule: the guest NIC's frames held until the log before them is acknowledged; the
NIC's bridge to the host's tap; the flush shim.
"""
