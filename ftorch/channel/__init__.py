"""The log's whole trip from the primary's file to the backup's QEMU: tail, framing, sender,
receiver, feeder, horizon, replayer.
"""
