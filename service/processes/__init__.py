"""Front-end worker processes around one model process (docs/architecture.md, "Processes")."""
