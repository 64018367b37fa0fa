"""This machine's edges: libvirt (the one importer), the pair's files, processes, image copies, and
the one-machine lab.
"""
