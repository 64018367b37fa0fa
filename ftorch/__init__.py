"""ftorch: fault-tolerant VMs on QEMU record/replay."""
