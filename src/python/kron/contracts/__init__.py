"""Names and models shared by every deployable.

The gateway and scheduler start workflows *by string name* through this package; they never import
worker code. Anything that crosses a process boundary (workflow input/output, signal and query names,
task queues, search attributes) is defined here once.
"""
