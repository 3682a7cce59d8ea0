"""The processes: the `cancelgw` CLI, serving (the composition of every part), the sandbox
and the workers supervisor."""
