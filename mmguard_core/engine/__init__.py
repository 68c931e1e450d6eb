"""The MMGuard engine: shared (per-answer / per-cluster) error-minimizing noise, per-sample
refinement, text triggers, binding losses and the simulated attacker, behind one call per shard."""
