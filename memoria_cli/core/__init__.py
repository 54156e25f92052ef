"""What memoria decides, with no side effects: the profile, the inventory's records, model facts,
the GPU memory model, the plan, and what each process will run."""
