"""kron's HTTP gateway: authenticates users, checks their toolkit connections and starts, lists,
follows and cancels agent runs in Temporal. Stateless: every answer comes from Temporal.

It starts `AgentWorkflow` by name (`kron.contracts`) and never imports worker code.
"""
