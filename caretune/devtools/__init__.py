"""Developer tools apart from the runtime: the venv setup script and the offline GPU kit."""
