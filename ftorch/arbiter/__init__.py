"""Who may run the guest: the role table, the ownership rules, and the test-and-set on the shared
path.
"""
