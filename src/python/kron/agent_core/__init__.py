"""The agent loop and its ports. Nothing in here imports Temporal.

`loop` is a pure state machine; `ports` names what it needs from the outside world; the adapters
(`anthropic_llm`, `composio_tools`, `demo`) implement those ports; `runner` drives the loop in-process.
The worker drives the very same loop from a Temporal workflow.
"""
