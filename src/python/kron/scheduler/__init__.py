"""kron's scheduler deployable: runs scheduled agent runs on Temporal Schedules and keeps declarative
ScheduledRun definitions (Kubernetes or a local YAML file) in sync with them. Never imports kron.worker."""
