"""What memoria does to the machine: its home and files, processes, probes, the supervisor, run state,
runtimes and the model store."""
