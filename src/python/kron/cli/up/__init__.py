"""`kron up`, the local stack: `command` (the subcommand: its flags and run_up), `plan` (what to
start, pure), `ports`, `temporal` (the dev server as kron runs it), `supervise` (the processes),
`banner` (what it prints once up)."""
