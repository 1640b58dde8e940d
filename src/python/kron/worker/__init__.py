"""The Temporal worker: `AgentWorkflow` and the activities that do its I/O, one step at a time."""
