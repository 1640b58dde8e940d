"""`kron`: the command line. Talks to the gateway's REST API only (`kron run`, `kron tasks`, ...) and
runs the local stack (`kron up`: Temporal dev server, worker, gateway, scheduler as child processes).

It never imports the worker, gateway or scheduler: those run as processes, from their PEXes or from
sources.
"""
