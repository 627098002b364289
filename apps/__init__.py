"""Django apps: the Taskplane control plane."""
