"""Training: one loop (Accelerate, PEFT) for every preference method."""
