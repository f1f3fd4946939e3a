"""The orchestrator (O): jobs, capability advertisement, the node that runs it all."""
