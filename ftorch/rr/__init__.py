"""What QEMU record/replay writes and reads: the log format, the domain description, snapshot
sections. No sockets, processes or libvirt.
"""
