"""The only way from one host (or the operator's machine) to another: requests over SSH.

`transport.py` says what can be asked of a host; `ssh.py` carries it (the one paramiko
importer); `serve.py` answers on the far side (`ftorch-host`, run by sshd).
"""
